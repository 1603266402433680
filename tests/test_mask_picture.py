"""The first-layer mask picture is the model's first layer, also when the masks come in another order: pruning at
initialisation (SNIP here) lists the output layer first, which used to cost every round its picture, with a
warning that blamed input_shape."""

from conftest import lth_train

from lth_wandb.tracking.runfiles import find_runs, read_run


def test_pruning_at_init_runs_keep_their_mask_pictures(tmp_path):
    done = lth_train(tmp_path, "pruning=snip", "pruning.rounds=1", "wandb.log_artifacts=false")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "no mask picture" not in done.stderr
    (run_dir,) = find_runs(tmp_path / "wandb")
    rows = [r for r in read_run(run_dir).history if "round/density" in r]
    assert [r["round"] for r in rows] == [0, 1]
    for row in rows:
        image = row["round/mask_first_layer"]  # LeNet-300-100's fc1 on 8x8 digits: an 8x8 map, upscaled 8x
        assert image["_type"] == "image-file" and (image["width"], image["height"]) == (64, 64)
        assert image["caption"].startswith(f"round {row['round']}: net.fc1.weight")

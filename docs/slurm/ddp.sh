#!/bin/bash
# One lth-train run, data-parallel over SLURM tasks: srun starts one task per device, Lightning takes each task's
# rank from SLURM. Submit from the folder the run should live in, with the venv active:
#   sbatch --nodes=2 --ntasks-per-node=4 --gres=gpu:4 docs/slurm/ddp.sh trainer.num_nodes=2 trainer.devices=4
#   sbatch --ntasks-per-node=2 docs/slurm/ddp.sh trainer.accelerator=cpu trainer.devices=2    # CPU: gloo
# trainer.devices must equal --ntasks-per-node and trainer.num_nodes --nodes.
#SBATCH --job-name=lth-ddp
#SBATCH --requeue
# A requeued job (preemption, node failure, `scontrol requeue`) keeps its id, so lth-train finds this run by its
# W&B run id and continues it from its last checkpoint, into the same W&B run.
set -eu
export WANDB_RUN_ID="lth-${SLURM_JOB_ID}"
# --kill-on-bad-exit: a rank that dies takes the others with it instead of leaving them waiting on it.
srun --kill-on-bad-exit=1 lth-train trainer=ddp "hydra.run.dir=runs/${SLURM_JOB_ID}" "$@"

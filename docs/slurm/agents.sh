#!/bin/bash
# One `wandb agent` per array task, each in a folder of its own (Hydra writes outputs/ under it). With the venv
# active, submit with the sweep id that `wandb sweep` printed:
#   sbatch --array=0-7 docs/slurm/agents.sh my-team/lth-wandb/abc123                      # CPU partition
#   sbatch --array=0-7 --gres=gpu:1 docs/slurm/agents.sh my-team/lth-wandb/abc123         # one GPU per agent
# (for GPUs, add trainer=gpu to the sweep file's command, before ${args_no_hyphens}).
#SBATCH --job-name=lth-agents
#SBATCH --requeue
#SBATCH --open-mode=append
# Two minutes before the time limit (and at preemption, where the cluster sets PreemptParameters=send_user_signal),
# SLURM sends SIGUSR2: lth-train stops at once, marks its W&B run preempting and exits; this script then requeues the
# task. The requeued task keeps its array ids and so its folder, W&B hands the preempted run back to its agent, and
# lth-train continues it from its last checkpoint. (Simulate it: scancel --batch --signal=USR2 <job>_<task>.)
#SBATCH --signal=B:USR2@120
set -u
dir="agents/${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}-${SLURM_ARRAY_TASK_ID:-0}"
mkdir -p "$dir" && cd "$dir"
echo "agent ${SLURM_ARRAY_TASK_ID:-0} on $(hostname), GPUs: ${CUDA_VISIBLE_DEVICES:-none}"
preempted=0
on_preempt() {
  preempted=1
  # SLURM signals this shell alone: pass the notice on to the run until it has ended (a run still starting ignores
  # it, as the agent does, until lth-train listens), then stop the agent before it takes another run.
  while pgrep -P "$agent" -f lth_wandb.train >/dev/null; do
    pkill -USR2 -P "$agent" -f lth_wandb.train || true
    sleep 1
  done
  kill -TERM "$agent" 2>/dev/null || true
}
trap on_preempt USR2
# The agent ignores SIGUSR2 (lth-train, which it starts, listens for it again).
(trap '' USR2; exec wandb agent --count "${AGENT_COUNT:-10}" "$1") &   # grids end by themselves; bayes needs --count
agent=$!
code=0
while kill -0 "$agent" 2>/dev/null; do wait "$agent"; code=$?; done
if [ "$preempted" = 1 ]; then
  exec scontrol requeue "$SLURM_JOB_ID"
fi
exit "$code"

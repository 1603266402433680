#!/bin/bash
# One `wandb agent` per array task, each in a folder of its own (Hydra writes outputs/ under it). With the venv
# active, submit with the sweep id that `wandb sweep` printed:
#   sbatch --array=0-7 docs/slurm/agents.sh my-team/lth-wandb/abc123                      # CPU partition
#   sbatch --array=0-7 --gres=gpu:1 docs/slurm/agents.sh my-team/lth-wandb/abc123         # one GPU per agent
# (for GPUs, add trainer=gpu to the sweep file's command, before ${args_no_hyphens}).
#SBATCH --job-name=lth-agents
#SBATCH --requeue
# A requeued task (preempted, or `scontrol requeue`) keeps its array ids and so its folder: lth-train marks the run
# it was training preempting, W&B hands that run back to an agent, and lth-train continues it from its checkpoint.
set -eu
dir="agents/${SLURM_ARRAY_JOB_ID:-$SLURM_JOB_ID}-${SLURM_ARRAY_TASK_ID:-0}"
mkdir -p "$dir" && cd "$dir"
echo "agent ${SLURM_ARRAY_TASK_ID:-0} on $(hostname), GPUs: ${CUDA_VISIBLE_DEVICES:-none}"
exec wandb agent --count "${AGENT_COUNT:-10}" "$1"   # grids end by themselves; bayes and random need --count

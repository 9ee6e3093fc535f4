#!/usr/bin/env bash
# Data-parallel training on one machine, side by side in one run: one process with 2 threads against
# `mpirun -np 2` ranks of 1 thread (global batch 2 x 256 tokens of GPT_CONFIG_124M either way), the ranks'
# gradients reduce-scattered and the weights all-gathered over shared memory (vader) and over TCP; each line
# gives every rank's phases. Usage: bench/distributed.sh [steps]
set -euo pipefail
steps=${1:-4}
cd "$(dirname "$0")/.."
# Linux's autogroup shares the CPU between sessions, whatever their nice: in a session of its own at the top
# autogroup priority (root only; skipped otherwise), other sessions' `nice -n 19` builds cannot take a rank's core.
if [[ -z ${GPTSHARP_BENCH_SESSION:-} && -w /proc/self/autogroup ]] && command -v setsid >/dev/null; then
  GPTSHARP_BENCH_SESSION=1 exec setsid -w "$0" "$@"
fi
[[ -n ${GPTSHARP_BENCH_SESSION:-} ]] && { echo -20 > /proc/self/autogroup; } 2>/dev/null || true
dotnet build -c Release bench/GptSharp.Benchmarks -v q -nologo >/dev/null
dll=bench/GptSharp.Benchmarks/bin/Release/net10.0/GptSharp.Benchmarks.dll
mpi=(mpirun --allow-run-as-root --oversubscribe -np 2 -x OMPI_MCA_btl)
echo "# $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg); $(cat /proc/self/autogroup 2>/dev/null)"
dotnet "$dll" data-parallel-quick 2 "$steps"
OMPI_MCA_btl=self,vader "${mpi[@]}" --bind-to core dotnet "$dll" data-parallel-quick 1 "$steps"
OMPI_MCA_btl=self,tcp "${mpi[@]}" --bind-to core dotnet "$dll" data-parallel-quick 1 "$steps"
echo "# the same over shared memory, ranks not bound to a core (mpirun --bind-to none):"
OMPI_MCA_btl=self,vader "${mpi[@]}" --bind-to none dotnet "$dll" data-parallel-quick 1 "$steps"
dotnet "$dll" data-parallel-quick 2 "$steps"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

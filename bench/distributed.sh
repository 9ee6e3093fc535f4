#!/usr/bin/env bash
# Data-parallel training on one machine, side by side in one run: one process with 2 threads against
# `mpirun -np 2` ranks of 1 thread (global batch 2 x 256 tokens of GPT_CONFIG_124M either way), the ranks'
# gradients summed over shared memory (vader) and over TCP. Usage: bench/distributed.sh [steps]
set -euo pipefail
steps=${1:-4}
cd "$(dirname "$0")/.."
dotnet build -c Release bench/GptSharp.Benchmarks -v q -nologo >/dev/null
dll=bench/GptSharp.Benchmarks/bin/Release/net10.0/GptSharp.Benchmarks.dll
mpi=(mpirun --allow-run-as-root --oversubscribe --bind-to core -np 2)
echo "# $(nproc) cores: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); load average $(cut -d' ' -f1-3 /proc/loadavg)"
dotnet "$dll" data-parallel-quick 2 "$steps"
OMPI_MCA_btl=self,vader "${mpi[@]}" dotnet "$dll" data-parallel-quick 1 "$steps"
OMPI_MCA_btl=self,tcp "${mpi[@]}" dotnet "$dll" data-parallel-quick 1 "$steps"
dotnet "$dll" data-parallel-quick 2 "$steps"
echo "# load average after: $(cut -d' ' -f1-3 /proc/loadavg)"

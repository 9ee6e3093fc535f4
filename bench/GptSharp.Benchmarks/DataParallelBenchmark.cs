using System.Diagnostics;
using GptSharp.Distributed;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Training;

namespace GptSharp.Benchmarks;

/// <summary>
/// Data-parallel training steps of the book's GPT_CONFIG_124M (context 256, drop 0.1) at a global batch of 2:
/// one process with 2 rows, or <c>mpirun -np 2</c> ranks with 1 row each taking the trainer's sharded optimizer step
/// (<see cref="DataParallel.OptimizerStep"/>: gradients reduce-scattered, AdamW on each rank's blocks, weights
/// all-gathered). Rank 0 prints the global tokens/s and every rank's time in each phase, so the same command
/// compares one process with N ranks, and shared memory (vader) with TCP. Run with
/// <c>bench/distributed.sh</c>, or <c>[mpirun -np 2] dotnet GptSharp.Benchmarks.dll data-parallel-quick [threads] [steps]</c>.
/// </summary>
public static class DataParallelBenchmark
{
    public static void Quick(int threads, int steps)
    {
        using var parallel = DistributedTraining.Start(DistributedTraining.Auto);
        Workers.Count = threads;
        int rows = TrainingStepBenchmark.BatchSize / parallel.WorldSize;
        if (rows * parallel.WorldSize != TrainingStepBenchmark.BatchSize)
            throw new ArgumentException($"The global batch of {TrainingStepBenchmark.BatchSize} rows does not split over {parallel.WorldSize} ranks.");
        var (model, optimizer, inputs, targets) = TrainingStepBenchmark.Create(seed: 123, rows);
        var parameters = model.Parameters();
        long gradientBytes = parameters.Sum(p => p.Length) * sizeof(float);

        // Phases, in seconds summed over the timed steps: forward+backward, waiting for the slowest rank, summing the
        // gradients (reduce-scatter), AdamW, all-gathering the weights, and the whole step.
        var phases = new double[6];
        void Step(double[] sums)
        {
            long start = Stopwatch.GetTimestamp();
            optimizer.ZeroGrad();
            Losses.CrossEntropy(model.Forward(inputs), targets).Backward();
            long computed = Stopwatch.GetTimestamp();
            parallel.Any(false); // waiting for the slowest rank (a one-number all-reduce), apart from moving the gradients
            long waited = Stopwatch.GetTimestamp();
            parallel.OptimizerStep(optimizer, microBatches: parallel.WorldSize, gradClip: 0); // the trainer's step, 1/N averaging included
            long stepped = Stopwatch.GetTimestamp();
            sums[0] += Stopwatch.GetElapsedTime(start, computed).TotalSeconds;
            sums[1] += Stopwatch.GetElapsedTime(computed, waited).TotalSeconds;
            if (parallel.IsDistributed)
            {
                sums[2] += parallel.LastStep.ReduceSeconds;
                sums[3] += parallel.LastStep.OptimizerSeconds;
                sums[4] += parallel.LastStep.GatherSeconds;
            }
            else sums[3] += Stopwatch.GetElapsedTime(waited, stepped).TotalSeconds;
            sums[5] += Stopwatch.GetElapsedTime(start, stepped).TotalSeconds;
        }

        // Warm-up: activation buffers, first touch of the gradients, MPI connections, and the tier-1 JIT of the hot
        // kernels, which finishes in the background during the first steps (on a rank bound to one core the background
        // compiler shares that core: after one warm-up step it still took 0.35 s of 8 s, and one rank ran 25 % slower).
        for (int w = 0; w < 2; w++) Step(new double[6]);
        parallel.Any(false); // start the clock together
        var total = Stopwatch.StartNew();
        for (int s = 0; s < steps; s++) Step(phases);
        double seconds = total.Elapsed.TotalSeconds / steps;
        // The communication alone, ranks in step (no compute to wait for): what the transport costs, for the sharded step
        // (reduce-scatter + all-gather) and for a plain all-reduce of every gradient.
        double sharded = 0, allReduce = 0;
        for (int s = 0; s < steps; s++)
        {
            parallel.Any(false);
            parallel.OptimizerStep(optimizer, parallel.WorldSize, 0);
            sharded += parallel.LastStep.ReduceSeconds + parallel.LastStep.GatherSeconds;
            parallel.Any(false);
            long start = Stopwatch.GetTimestamp();
            parallel.SumGradients(parameters);
            allReduce += Stopwatch.GetElapsedTime(start).TotalSeconds;
        }
        // Every rank's phases, summed into place on rank 0 (x + 0 is exact): which rank lags, and in what.
        var perRank = new double[phases.Length * parallel.WorldSize];
        for (int i = 0; i < phases.Length; i++) perRank[phases.Length * parallel.Rank + i] = phases[i] / steps;
        parallel.SumOverRanks(perRank);
        if (parallel.IsDistributed) parallel.VerifyIdentical(model, "after the benchmark");
        if (parallel.IsRoot)
        {
            int tokens = TrainingStepBenchmark.BatchSize * TrainingStepBenchmark.ContextLength;
            string transport = parallel.IsDistributed ? $" ({Environment.GetEnvironmentVariable("OMPI_MCA_btl") ?? "default btl"})" : "";
            Console.WriteLine($"{parallel.WorldSize} process(es) x {threads} thread(s){transport}: {seconds:F3} s/step, {tokens / seconds:F0} tokens/s");
            for (int rank = 0; rank < parallel.WorldSize; rank++)
            {
                var p = perRank.AsSpan(phases.Length * rank, phases.Length);
                Console.WriteLine($"  {(parallel.IsDistributed ? $"rank {rank}: " : "")}forward+backward {p[0]:F3}  wait for the slowest rank {p[1]:F3}  " +
                    $"reduce-scatter {p[2]:F3}  adamw {p[3]:F3}  all-gather {p[4]:F3}  step {p[5]:F3}");
            }
            if (parallel.IsDistributed)
            {
                double bus = 2.0 * (parallel.WorldSize - 1) / parallel.WorldSize * gradientBytes / 1e9; // GB each rank moves per all-reduce
                Console.WriteLine($"  communication alone, ranks in step ({gradientBytes / 1e6:F0} MB of gradients): reduce-scatter + all-gather {sharded / steps:F3} s " +
                    $"({bus / (sharded / steps):F2} GB/s bus), all-reduce {allReduce / steps:F3} s ({bus / (allReduce / steps):F2} GB/s bus)");
            }
        }
        optimizer.Dispose();
        model.Dispose();
    }
}

using System.Diagnostics;
using GptSharp.Distributed;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Training;

namespace GptSharp.Benchmarks;

/// <summary>
/// Data-parallel training steps of the book's GPT_CONFIG_124M (context 256, drop 0.1) at a global batch of 2:
/// one process with 2 rows, or <c>mpirun -np 2</c> ranks with 1 row each and their gradients summed by
/// MPI_Allreduce. Rank 0 prints the global tokens/s and the time of each phase, the all-reduce included, so the
/// same command compares one process with N ranks, and shared memory (vader) with TCP. Run with
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

        void Step(ref double compute, ref double wait, ref double allReduce, ref double adam)
        {
            var sw = Stopwatch.StartNew();
            optimizer.ZeroGrad();
            Losses.CrossEntropy(model.Forward(inputs), targets).Backward();
            compute += sw.Elapsed.TotalSeconds;
            // Waiting for the slowest rank (a one-number all-reduce), apart from moving the gradients.
            sw.Restart();
            parallel.Any(false);
            wait += sw.Elapsed.TotalSeconds;
            sw.Restart();
            parallel.SumGradients(parameters);
            allReduce += sw.Elapsed.TotalSeconds;
            sw.Restart();
            if (parallel.WorldSize > 1) Gradients.Scale(parameters, 1f / parallel.WorldSize);
            optimizer.Step();
            adam += sw.Elapsed.TotalSeconds;
        }

        double c = 0, w = 0, r = 0, a = 0;
        Step(ref c, ref w, ref r, ref a); // warm-up: activation buffers, first touch of the gradients, MPI connections
        c = w = r = a = 0;
        parallel.Any(false); // start the clock together
        var total = Stopwatch.StartNew();
        for (int s = 0; s < steps; s++) Step(ref c, ref w, ref r, ref a);
        double seconds = total.Elapsed.TotalSeconds / steps;
        // The all-reduce alone, ranks in step (no compute to wait for): what the transport costs.
        double alone = 0;
        for (int s = 0; s < steps; s++)
        {
            parallel.Any(false);
            var sw = Stopwatch.StartNew();
            parallel.SumGradients(parameters);
            alone += sw.Elapsed.TotalSeconds;
        }
        alone /= steps;
        if (parallel.IsDistributed) parallel.VerifyIdentical(model, "after the benchmark");
        if (parallel.IsRoot)
        {
            int tokens = TrainingStepBenchmark.BatchSize * TrainingStepBenchmark.ContextLength;
            string transport = parallel.IsDistributed ? $" ({Environment.GetEnvironmentVariable("OMPI_MCA_btl") ?? "default btl"})" : "";
            Console.WriteLine($"{parallel.WorldSize} process(es) x {threads} thread(s){transport}: {seconds:F3} s/step, {tokens / seconds:F0} tokens/s");
            Console.WriteLine($"  forward+backward {c / steps:F3}  waiting for the slowest rank {w / steps:F3}  all-reduce {r / steps:F3} ({r / steps / seconds:P1} of the step, {gradientBytes / 1e6:F0} MB, " +
                $"{(parallel.IsDistributed ? 2.0 * (parallel.WorldSize - 1) / parallel.WorldSize * gradientBytes / (r / steps) / 1e9 : 0):F2} GB/s bus)  adamw {a / steps:F3}");
            if (parallel.IsDistributed)
                Console.WriteLine($"  all-reduce alone, ranks in step: {alone:F3} s ({2.0 * (parallel.WorldSize - 1) / parallel.WorldSize * gradientBytes / alone / 1e9:F2} GB/s bus)");
        }
        optimizer.Dispose();
        model.Dispose();
    }
}

using System.Diagnostics;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Training;
using GptSharp.Randomness;
using GptSharp.Data;

namespace GptSharp.Benchmarks;

/// <summary>
/// One full training step of the book's GPT_CONFIG_124M (context 256, batch 2, drop 0.1): forward, loss,
/// backward and AdamW, the loop body of chapter 5's <c>train_model_simple</c>. Reports tokens/s and prints
/// the process's peak RSS (bar: 3.5 GiB). Run with
/// <c>dotnet run -c Release --project bench/GptSharp.Benchmarks -- --filter '*TrainingStep*'</c>,
/// or without BenchmarkDotNet: <c>-- train-step-quick [threads] [steps] [context] [batch]</c> (default 256 × 2; GPT-2's own
/// context: 1024), which also prints the peak RSS beside <see cref="MemoryBudget.TrainingBytes"/>'s estimate.
/// </summary>
[Config(typeof(TrainingStepConfig))]
[SimpleJob(launchCount: 1, warmupCount: 1, iterationCount: 5, invocationCount: 1)]
public class TrainingStepBenchmark
{
    public const int BatchSize = 2;
    public const int ContextLength = 256;

    private GptModel _model = null!;
    private AdamW _optimizer = null!;
    private TokenBatch _inputs = null!, _targets = null!;

    [Params(2)]
    public int Threads { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        Workers.Count = Threads;
        (_model, _optimizer, _inputs, _targets) = Create(seed: 123);
        TrainingStep(); // warm-up: allocates the activation buffers
    }

    [Benchmark]
    public float TrainingStep() => Step(_model, _optimizer, _inputs, _targets);

    [GlobalCleanup]
    public void Cleanup()
    {
        Console.WriteLine($"// Peak RSS: {Process.GetCurrentProcess().PeakWorkingSet64 / (double)(1L << 30):F2} GiB");
        _optimizer.Dispose();
        _model.Dispose();
    }

    internal static (GptModel, AdamW, TokenBatch, TokenBatch) Create(ulong seed, int batchSize = BatchSize, int contextLength = ContextLength)
    {
        var config = Config(contextLength);
        var model = new GptModel(config, new FastRandom(seed));
        model.Train();
        var optimizer = new AdamW(model.Parameters(), lr: 0.0004f, weightDecay: 0.1f);
        var rng = new Random((int)seed);
        int t = contextLength;
        int[] ids = Enumerable.Range(0, batchSize * (t + 1)).Select(_ => rng.Next(config.VocabSize)).ToArray();
        var inputs = new TokenBatch(new int[batchSize * t], batchSize, t);
        var targets = new TokenBatch(new int[batchSize * t], batchSize, t);
        for (int b = 0; b < batchSize; b++)
        {
            ids.AsSpan(b * (t + 1), t).CopyTo(inputs.Ids.AsSpan(b * t));
            ids.AsSpan(b * (t + 1) + 1, t).CopyTo(targets.Ids.AsSpan(b * t));
        }
        return (model, optimizer, inputs, targets);
    }

    /// <summary>The book's model with dropout 0.1 at a context length (GPT-2's own 1024 or the book's 256).</summary>
    internal static GptConfig Config(int contextLength) => GptConfig.Book124M with { DropRate = 0.1f, ContextLength = contextLength };

    /// <summary>The book's training-loop body.</summary>
    internal static float Step(GptModel model, AdamW optimizer, TokenBatch inputs, TokenBatch targets)
    {
        optimizer.ZeroGrad();
        var loss = Pretraining.CalcLossBatch(inputs, targets, model);
        loss.Backward();
        optimizer.Step();
        return loss.Value;
    }

    /// <summary>Stopwatch timing of each phase of a step, plus peak RSS: for profiling without BenchmarkDotNet.</summary>
    public static void Quick(int threads, int steps, int contextLength = ContextLength, int batchSize = BatchSize)
    {
        Workers.Count = threads;
        Console.WriteLine($"{Machine.Description}; context {contextLength} × batch {batchSize}");
        var (model, optimizer, inputs, targets) = Create(seed: 123, batchSize, contextLength);
        Step(model, optimizer, inputs, targets);
        var sw = new Stopwatch();
        double zero = 0, forward = 0, backward = 0, adam = 0;
        Step(model, optimizer, inputs, targets);
        var losses = new float[steps];
        long allocatedBefore = GC.GetTotalAllocatedBytes(precise: true);
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var total = Stopwatch.StartNew();
        for (int s = 0; s < steps; s++)
        {
            sw.Restart(); optimizer.ZeroGrad(); zero += sw.Elapsed.TotalSeconds;
            sw.Restart(); var l = Pretraining.CalcLossBatch(inputs, targets, model); forward += sw.Elapsed.TotalSeconds;
            sw.Restart(); l.Backward(); backward += sw.Elapsed.TotalSeconds;
            sw.Restart(); optimizer.Step(); adam += sw.Elapsed.TotalSeconds;
            losses[s] = l.Value;
        }
        double seconds = total.Elapsed.TotalSeconds / steps;
        long allocated = GC.GetTotalAllocatedBytes(precise: true) - allocatedBefore;
        for (int i = 0; i < steps; i++) Console.WriteLine($"step {i + 1}: loss {losses[i]:F4}");
        double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds / steps;
        Console.WriteLine($"threads {threads}: {seconds:F3} s/step ({batchSize * contextLength / seconds:F0} tokens/s), CPU {cpuSeconds:F3} s/step");
        Console.WriteLine($"  zero_grad {zero / steps:F3}  forward+loss {forward / steps:F3}  backward {backward / steps:F3}  adamw {adam / steps:F3}");
        double peak = Process.GetCurrentProcess().PeakWorkingSet64;
        Console.WriteLine($"  peak RSS {peak / 1e9:F2} GB (MemoryBudget estimate {MemoryBudget.TrainingBytes(Config(contextLength), batchSize) / 1e9:F2} GB), activations {model.ActivationBytes / 1e9:F2} GB, managed bytes allocated per step {allocated / steps}");
        optimizer.Dispose();
        model.Dispose();
    }
}

/// <summary>
/// Issue 26's bar as one figure: steps at context 1024 × batch 2 against 256 × 8 (the same 2,048 tokens), both models in
/// one process and timed in alternating steps, so a machine whose speed drifts slows both alike; the median of the
/// per-pair ratios is printed: <c>... -- train-step-ratio [pairs] [threads] [long context] [short context] [tokens per step]</c>.
/// </summary>
public static class TrainingStepRatio
{
    public static void Quick(int pairs, int threads, int longContext = 1024, int shortContext = 256, int tokens = 2048)
    {
        Workers.Count = threads;
        Console.WriteLine($"{Machine.Description}; {longContext} × {tokens / longContext} against {shortContext} × {tokens / shortContext}, {pairs} pairs");
        var shapes = new[] { shortContext, longContext }
            .Select(t => TrainingStepBenchmark.Create(seed: 123, tokens / t, t)).ToArray();
        foreach (var (model, optimizer, inputs, targets) in shapes) TrainingStepBenchmark.Step(model, optimizer, inputs, targets); // warm-up
        var seconds = new[] { new List<double>(), new List<double>() };
        for (int pair = 0; pair < pairs; pair++)
            for (int i = 0; i < 2; i++)
            {
                // Alternate which shape goes first, so neither always follows the other.
                int which = pair % 2 == 0 ? i : 1 - i;
                var (model, optimizer, inputs, targets) = shapes[which];
                var clock = Stopwatch.StartNew();
                TrainingStepBenchmark.Step(model, optimizer, inputs, targets);
                seconds[which].Add(clock.Elapsed.TotalSeconds);
            }
        static double Median(IEnumerable<double> values)
        {
            var sorted = values.Order().ToArray();
            return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
        }
        for (int i = 0; i < 2; i++)
            Console.WriteLine($"context {(i == 0 ? shortContext : longContext)}: median {tokens / Median(seconds[i]):F0} tokens/s " +
                $"(steps {string.Join(" ", seconds[i].Select(x => (tokens / x).ToString("F0")))})");
        var ratios = seconds[0].Zip(seconds[1], (shortStep, longStep) => shortStep / longStep).ToArray();
        Console.WriteLine($"context {longContext} / {shortContext} throughput: median of per-pair ratios {Median(ratios):P1} " +
            $"(pairs {string.Join(" ", ratios.Select(r => r.ToString("P0")))})");
        foreach (var (model, optimizer, _, _) in shapes)
        {
            optimizer.Dispose();
            model.Dispose();
        }
    }
}

/// <summary>Adds a tokens/s column (batch × context tokens per invocation).</summary>
public sealed class TrainingStepConfig : ManualConfig
{
    public TrainingStepConfig() => AddColumn(new TokensPerSecondColumn());

    private sealed class TokensPerSecondColumn : IColumn
    {
        public string Id => "TokensPerSecond";
        public string ColumnName => "tokens/s";
        public bool AlwaysShow => true;
        public ColumnCategory Category => ColumnCategory.Custom;
        public int PriorityInCategory => 0;
        public bool IsNumeric => true;
        public UnitType UnitType => UnitType.Dimensionless;
        public string Legend => "tokens per second: batch × context tokens over the mean step time";
        public bool IsAvailable(Summary summary) => true;
        public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;
        public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

        public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
        {
            var stats = summary[benchmarkCase]?.ResultStatistics;
            if (stats == null) return "NA";
            return (TrainingStepBenchmark.BatchSize * TrainingStepBenchmark.ContextLength / (stats.Mean * 1e-9)).ToString("F0");
        }
    }
}

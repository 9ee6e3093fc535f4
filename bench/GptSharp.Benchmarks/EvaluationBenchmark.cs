using System.Diagnostics;
using System.Runtime.Intrinsics.X86;
using GptSharp.Evaluation;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Benchmarks;

/// <summary>
/// <c>eval-quick [examples] [threads] [batch]</c>: HellaSwag and LAMBADA scoring with GPT-2 124M's shape (random weights,
/// context 1024) on task files made by repeating the test fixtures' examples, in examples/s and forward tokens/s.
/// The rows are as long as the fixtures' (HellaSwag ~20 tokens, LAMBADA ~25); the real sets' are longer (HellaSwag ~60-100,
/// LAMBADA ~80), so take the rate per forward token, not per example, to estimate a real run.
/// </summary>
public static class EvaluationBenchmark
{
    public static void Quick(int examples, int threads, int batch)
    {
        Workers.Count = threads;
        Console.WriteLine($"CPU: {Environment.ProcessorCount} logical cores, {(Avx512F.IsSupported ? "AVX-512" : Avx2.IsSupported ? "AVX2" : "no AVX2")}; {threads} threads, batch {batch}");
        using var model = new GptModel(GptConfig.Gpt2Small with { QkvBias = true }, new FastRandom(123));
        string fixtures = FixtureFolder();
        foreach (string task in BenchmarkTask.Names)
        {
            string source = Path.Combine(fixtures, $"{task}-mini.jsonl");
            var lines = File.ReadAllLines(source).Where(l => l.Length > 0).ToArray();
            string path = Path.Combine(Path.GetTempPath(), $"gptsharp-eval-quick-{task}.jsonl");
            File.WriteAllLines(path, Enumerable.Range(0, examples).Select(i => lines[i % lines.Length]));
            try
            {
                var benchmark = BenchmarkTask.Load(task, path);
                var options = new BenchmarkOptions { BatchSize = batch };
                BenchmarkTask.Load(task, source).Evaluate(model, options); // warm-up
                var clock = Stopwatch.StartNew();
                var result = benchmark.Evaluate(model, options);
                double seconds = clock.Elapsed.TotalSeconds;
                long tokens = ForwardTokens(source, task) * examples / lines.Length;
                Console.WriteLine($"{task}: {result.Count} examples in {seconds:F1} s: {result.Count / seconds:F1} examples/s, ~{tokens / seconds:F0} forward tokens/s ({result.Describe()})");
            }
            finally
            {
                File.Delete(path);
            }
        }
    }

    /// <summary>The test fixtures' task files, found from the build output up to the repository.</summary>
    private static string FixtureFolder()
    {
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            string candidate = Path.Combine(dir.FullName, "tests", "GptSharp.Tests", "Fixtures", "evaluation");
            if (Directory.Exists(candidate)) return candidate;
        }
        throw new DirectoryNotFoundException("tests/GptSharp.Tests/Fixtures/evaluation not found above " + AppContext.BaseDirectory);
    }

    /// <summary>Tokens run through the model for one pass over the file's examples (context + continuation − 1 per row).</summary>
    private static long ForwardTokens(string path, string task)
    {
        var tokenizer = Tokenization.Gpt2Tokenizer.Instance;
        long total = 0;
        foreach (string line in File.ReadAllLines(path).Where(l => l.Length > 0))
        {
            using var json = System.Text.Json.JsonDocument.Parse(line);
            var root = json.RootElement;
            if (task == HellaSwag.TaskName)
            {
                int context = tokenizer.EncodeOrdinary(root.GetProperty("ctx").GetString()!).Length;
                foreach (var ending in root.GetProperty("endings").EnumerateArray())
                    total += context + tokenizer.EncodeOrdinary(" " + ending.GetString()).Length - 1;
            }
            else total += tokenizer.EncodeOrdinary(root.GetProperty("text").GetString()!).Length - 1;
        }
        return total;
    }
}

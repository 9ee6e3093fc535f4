using System.Diagnostics;
using System.Runtime.Intrinsics.X86;
using GptSharp.Checkpoints;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Tests.Interop;
using GptSharp.Randomness;

namespace GptSharp.Benchmarks;

/// <summary>
/// GGUF export/import time for the GPT-2 124M shape, then GptSharp against llama.cpp (LLamaSharp 0.30) on the same GGUF files:
/// <c>dotnet run -c Release --project bench/GptSharp.Benchmarks -- gguf-quick [rounds=5] [threads=2] [newTokens=200] [context=1024] [DIR]</c>.
/// Random weights (qkv_bias, untied head); GptSharp float32 runs the f32 file, GptSharp int8 the q8_0 file loaded straight
/// into int8; llama.cpp runs each file. Decode: an 8-token prompt then <c>newTokens</c> greedy tokens through the KV cache;
/// prefill: one 512-token prompt (or the context, if shorter). Engines alternate within each round; medians are printed.
/// </summary>
public static class GgufBenchmark
{
    private static readonly int[] Prompt = [6109, 3626, 6100, 345, 11, 290, 262, 640];

    public static void Quick(int rounds, int threads, int newTokens, int context, string? directory)
    {
        Workers.Count = threads;
        Console.WriteLine($"CPU: {CpuName()}, {Environment.ProcessorCount} logical cores; ISA: {Isa()}; {threads} threads for both engines");
        string dir = Path.Combine(directory ?? Path.GetTempPath(), "gptsharp-gguf-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            var config = GptConfig.Gpt2Small with { QkvBias = true, ContextLength = context };
            string f32 = Path.Combine(dir, "model-f32.gguf"), q8 = Path.Combine(dir, "model-q8_0.gguf");
            ExportImport(config, dir, f32, q8);
            if (LlamaCpp.Unavailable is { } why)
            {
                Console.WriteLine($"llama.cpp comparison skipped: {why}");
                return;
            }
            Compare("float32 / f32", f32, WeightQuantization.None, rounds, threads, newTokens, context);
            Compare("int8 / q8_0", q8, WeightQuantization.Int8, rounds, threads, newTokens, context);
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    private static void ExportImport(GptConfig config, string dir, string f32, string q8)
    {
        string safetensors = Path.Combine(dir, "model.safetensors");
        using (var model = new GptModel(config, new FastRandom(123)))
        {
            model.Save(safetensors);
            Time("export f32 GGUF", () => model.Export(f32, new ExportOptions(ModelFileFormat.Gguf)), f32);
            Time("export f16 GGUF", () => model.Export(Path.Combine(dir, "model-f16.gguf"), new ExportOptions(ModelFileFormat.Gguf) { DType = ExportDType.Float16 }), Path.Combine(dir, "model-f16.gguf"));
            Time("export q8_0 GGUF", () => model.Export(q8, new ExportOptions(ModelFileFormat.Gguf) { DType = ExportDType.Q8_0 }), q8);
        }
        // From the page cache, like the safetensors reference beside it.
        for (int round = 0; round < 2; round++)
        {
            Time("read safetensors (reference)", () => GptModel.Load(safetensors).Dispose(), safetensors);
            Time("import f32 GGUF", () => GptModel.Load(f32).Dispose(), f32);
            Time("import f16 GGUF", () => GptModel.Load(Path.Combine(dir, "model-f16.gguf")).Dispose(), Path.Combine(dir, "model-f16.gguf"));
            Time("import q8_0 GGUF as int8", () => GptModel.Load(q8, new LoadOptions { Quantization = WeightQuantization.Int8 }).Dispose(), q8);
            Time("import q8_0 GGUF as float32", () => GptModel.Load(q8).Dispose(), q8);
        }
    }

    private static void Time(string what, Action action, string file)
    {
        var clock = Stopwatch.StartNew();
        action();
        double s = clock.Elapsed.TotalSeconds;
        long bytes = new FileInfo(file).Length;
        Console.WriteLine($"{what,-30} {s,6:F2} s  ({bytes / 1e6:F0} MB, {bytes / 1e6 / s:F0} MB/s)");
    }

    private static void Compare(string name, string gguf, WeightQuantization quantization, int rounds, int threads, int newTokens, int context)
    {
        int prefillLength = Math.Min(512, context);
        var longPrompt = Enumerable.Range(0, prefillLength).Select(i => (i * 7919) % 50257).ToArray();
        using var ours = GptModel.Load(gguf, new LoadOptions { Quantization = quantization });
        ours.Eval();
        using var cache = new KvCache(ours);
        using var llama = new LlamaCpp.Session(gguf, context, threads);
        var decode = new List<double>[] { [], [] };
        var prefill = new List<double>[] { [], [] };
        int[]? ourIds = null, theirIds = null;
        for (int round = -1; round < rounds; round++) // round −1 warms both up
        {
            var clock = Stopwatch.StartNew();
            ourIds = GreedyOurs(ours, cache, newTokens);
            double d0 = newTokens / clock.Elapsed.TotalSeconds;
            clock.Restart();
            theirIds = llama.Greedy(Prompt, newTokens);
            double d1 = newTokens / clock.Elapsed.TotalSeconds;
            clock.Restart();
            ours.Prefill(cache, longPrompt);
            double p0 = prefillLength / clock.Elapsed.TotalSeconds;
            clock.Restart();
            llama.Reset();
            llama.Decode(longPrompt, 0, all: false);
            double p1 = prefillLength / clock.Elapsed.TotalSeconds;
            if (round < 0) continue;
            decode[0].Add(d0);
            decode[1].Add(d1);
            prefill[0].Add(p0);
            prefill[1].Add(p1);
        }
        int same = ourIds!.Zip(theirIds!).TakeWhile(p => p.First == p.Second).Count();
        Console.WriteLine($"{name}: decode {Median(decode[0]):F1} / {Median(decode[1]):F1} tok/s = {Median(decode[0]) / Median(decode[1]):F2}x; " +
            $"prefill {prefillLength}: {Median(prefill[0]):F0} / {Median(prefill[1]):F0} tok/s = {Median(prefill[0]) / Median(prefill[1]):F2}x " +
            $"(GptSharp / llama.cpp, medians of {rounds}); greedy ids agree for {same} of {newTokens} tokens");
    }

    private static int[] GreedyOurs(GptModel model, KvCache cache, int newTokens)
    {
        var ids = new int[newTokens];
        var logits = model.Prefill(cache, Prompt);
        for (int i = 0; i < newTokens; i++)
        {
            ids[i] = LlamaCpp.ArgMax(logits.Span);
            logits = model.DecodeNext(cache, ids[i]);
        }
        return ids;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
    }

    private static string CpuName()
    {
        try
        {
            return File.ReadLines("/proc/cpuinfo").FirstOrDefault(l => l.StartsWith("model name", StringComparison.Ordinal))?.Split(':', 2)[1].Trim() ?? "unknown CPU";
        }
        catch (IOException)
        {
            return "unknown CPU";
        }
    }

    private static string Isa() => Avx512F.IsSupported ? $"AVX-512 (BW {Avx512BW.IsSupported}, VBMI {Avx512Vbmi.IsSupported})"
        : Avx2.IsSupported ? $"AVX2 (AVX-VNNI {AvxVnni.IsSupported})" : "no AVX2";
}

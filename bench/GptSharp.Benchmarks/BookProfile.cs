using System.Diagnostics;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Randomness;
using GptSharp.Layers;
using GptSharp.Checkpoints;

namespace GptSharp.Benchmarks;

/// <summary>
/// Where the book's model (context 256, untied head) spends a short prompt's prefill and a decoding step, float32
/// against int8, interleaved: <c>... -- book-profile [rounds=5] [threads=2] [prefill=200]</c>. Whole prefill and
/// decode rates, then each linear shape of the model alone (the 12 blocks' four shapes at the prefill's rows, the
/// head at one row): milliseconds per call, medians.
/// </summary>
public static unsafe class BookProfile
{
    public static void Quick(int rounds, int threads, int prefill)
    {
        Workers.Count = threads;
        Console.WriteLine($"{Machine.Description}; threads {threads}; book model, prefill {prefill}");
        var config = GptConfig.Gpt2Small with { ContextLength = 256 };
        using var f32 = new GptModel(config, new FastRandom(123));
        using var int8 = new GptModel(config, new FastRandom(123));
        int8.QuantizeInt8();
        f32.Eval();
        int8.Eval();
        var prompt = Enumerable.Range(0, prefill).Select(i => (i * 7919) % 50257).ToArray();
        // Each precision with the GEMM's even row blocks and without (Gemm.EvenRowBlocks), in turn every round.
        var models = new[] { ("float32", f32, true), ("int8", int8, true), ("float32 uneven", f32, false), ("int8 uneven", int8, false) };
        var caches = models.Select(m => new KvCache(m.Item2)).ToArray();
        var pre = new List<double>[] { [], [], [], [] };
        var dec = new List<double>[] { [], [], [], [] };
        for (int r = -1; r < rounds; r++)
        {
            for (int v = 0; v < models.Length; v++)
            {
                var model = models[v].Item2;
                Gemm.EvenRowBlocks = models[v].Item3;
                var clock = Stopwatch.StartNew();
                model.Prefill(caches[v], prompt);
                double p = clock.Elapsed.TotalMilliseconds;
                model.Prefill(caches[v], prompt.AsSpan(0, 8));
                clock.Restart();
                int id = 11;
                for (int i = 0; i < 100; i++) id = ArgMax(model.DecodeNext(caches[v], id).Span);
                double d = 100 / clock.Elapsed.TotalSeconds;
                if (r < 0) continue;
                pre[v].Add(p);
                dec[v].Add(d);
            }
        }
        Gemm.EvenRowBlocks = true;
        for (int v = 0; v < models.Length; v++)
            Console.WriteLine($"{models[v].Item1,-15} prefill {prefill}: {Median(pre[v]):F1} ms = {prefill / Median(pre[v]) * 1000:F0} tok/s; decode {Median(dec[v]):F1} tok/s");
        foreach (var c in caches) c.Dispose();

        // The float32 decoding step's linear layers alone, in the model's order, from memory: what the step costs
        // without attention, norms and the rest.
        {
            int e = config.EmbeddingDim, h = config.HiddenDim;
            using var xin = new Tensor(h);
            using var yout = new Tensor(config.VocabSize);
            new FastRandom(3).Uniform(xin.Span, -0.5, 0.5);
            var chain = new List<double>();
            var headOnly = new List<double>();
            for (int r = -1; r < rounds; r++)
            {
                var clock = Stopwatch.StartNew();
                for (int t = 0; t < 20; t++)
                {
                    foreach (var b in f32.Blocks)
                    {
                        Kernels.LinearForward(yout.Data, xin.Data, b.Query.Weight.Value.Data, null, 1, e, e);
                        Kernels.LinearForward(yout.Data, xin.Data, b.Key.Weight.Value.Data, null, 1, e, e);
                        Kernels.LinearForward(yout.Data, xin.Data, b.Value.Weight.Value.Data, null, 1, e, e);
                        Kernels.LinearForward(yout.Data, xin.Data, b.OutProj.Weight.Value.Data, null, 1, e, e);
                        Kernels.LinearForward(yout.Data, xin.Data, b.FeedForwardIn.Weight.Value.Data, null, 1, e, h);
                        Kernels.LinearForward(yout.Data, xin.Data, b.FeedForwardOut.Weight.Value.Data, null, 1, h, e);
                    }
                    Kernels.LinearForward(yout.Data, xin.Data, f32.OutHead.Value.Data, null, 1, e, config.VocabSize);
                }
                double all = clock.Elapsed.TotalMilliseconds / 20;
                clock.Restart();
                for (int t = 0; t < 20; t++) Kernels.LinearForward(yout.Data, xin.Data, f32.OutHead.Value.Data, null, 1, e, config.VocabSize);
                double head = clock.Elapsed.TotalMilliseconds / 20;
                if (r < 0) continue;
                chain.Add(all);
                headOnly.Add(head);
            }
            double blockBytes = 12.0 * (4 * e * e + 2 * e * h) * 4, headBytes = (double)e * config.VocabSize * 4;
            Console.WriteLine($"float32 decode linears alone: {Median(chain):F2} ms per token ({(blockBytes + headBytes) / Median(chain) / 1e6:F1} GB/s); " +
                $"head alone {Median(headOnly):F2} ms ({headBytes / Median(headOnly) / 1e6:F1} GB/s); blocks {(blockBytes) / (Median(chain) - Median(headOnly)) / 1e6:F1} GB/s");
        }

        if (Environment.GetEnvironmentVariable("PREFILL_ONLY") == "1") return;
        // The linear shapes alone.
        int emb = config.EmbeddingDim, hidden = config.HiddenDim, vocab = config.VocabSize;
        (string Name, int Rows, int In, int Out, int PerPrefill)[] shapes =
            [("qkv/proj 768x768", prefill, emb, emb, 48), ("fc 768x3072", prefill, emb, hidden, 12), ("fc2 3072x768", prefill, hidden, emb, 12),
             ("head 1 row", 1, emb, vocab, 1), ("decode 768x3072 1 row", 1, emb, hidden, 0), ("decode 3072x768 1 row", 1, hidden, emb, 0)];
        var rng = new FastRandom(7);
        foreach (var s in shapes)
        {
            using var w = new Tensor(s.Out, s.In);
            using var x = new Tensor(s.Rows, s.In);
            using var y = new Tensor(s.Rows, s.Out);
            using var bias = new Tensor(s.Out);
            rng.Uniform(w.Span, -0.05, 0.05);
            rng.Uniform(x.Span, -0.5, 0.5);
            using var q = Int8Matrix.Quantize(w.Data, s.Out, s.In);
            var t = new List<double>[] { [], [] };
            int reps = s.Rows == 1 ? 20 : 3;
            for (int r = -1; r < rounds; r++)
            {
                var clock = Stopwatch.StartNew();
                for (int i = 0; i < reps; i++) Kernels.LinearForward(y.Data, x.Data, w.Data, bias.Data, s.Rows, s.In, s.Out);
                double a = clock.Elapsed.TotalMilliseconds / reps;
                clock.Restart();
                for (int i = 0; i < reps; i++) Int8Kernels.LinearForwardInt8(y.Data, x.Data, q, bias.Data, s.Rows);
                double b = clock.Elapsed.TotalMilliseconds / reps;
                if (r < 0) continue;
                t[0].Add(a);
                t[1].Add(b);
            }
            Console.WriteLine($"{s.Name,-24} float32 {Median(t[0]):F3} ms, int8 {Median(t[1]):F3} ms ({Median(t[1]) / Median(t[0]):F2}x)" +
                (s.PerPrefill > 0 ? $"; per prefill ×{s.PerPrefill}: {Median(t[0]) * s.PerPrefill:F1} / {Median(t[1]) * s.PerPrefill:F1} ms" : ""));
        }
    }

    /// <summary>Greedy decoding only, for a sampling profiler: <c>... -- book-decode [tokens=600] [float32|int8] [threads=2]</c>.</summary>
    public static void DecodeOnly(int tokens, string precision, int threads)
    {
        Workers.Count = threads;
        var config = GptConfig.Gpt2Small with { ContextLength = 256 };
        // PAGES=ab: the same weights twice, on 4 KiB pages and on transparent huge pages, timed in turn in this process
        // (an A/B that a loaded machine disturbs equally on both sides).
        bool pagesAb = Environment.GetEnvironmentVariable("PAGES") == "ab";
        var models = new List<(string Pages, GptModel Model)>();
        foreach (bool huge in pagesAb ? new[] { false, true } : [PageAdvice.HugePages])
        {
            PageAdvice.HugePages = huge;
            var model = new GptModel(config, new FastRandom(123));
            if (precision == "int8") model.QuantizeInt8();
            model.Eval();
            models.Add((huge ? "huge pages" : "4 KiB pages", model));
        }
        PageAdvice.HugePages = true;
        // Variants "fusedQkv:tasksPerThread" (1/0, tasks of the skinny GEMM per thread), comma-separated in the environment
        // variable VARIANTS, run in turn every round.
        string[] distances = (Environment.GetEnvironmentVariable("VARIANTS") ?? $"1:{Gemm.SkinnyTasksPerThread}").Split(',');
        var runs = models.SelectMany(m => distances.Select(d => (m.Pages, m.Model, Variant: d))).ToArray();
        var rates = runs.Select(_ => new List<double>()).ToArray();
        int rounds = int.TryParse(Environment.GetEnvironmentVariable("ROUNDS"), out int r) ? r : 5;
        for (int round = -1; round < rounds; round++)
            for (int v = 0; v < runs.Length; v++)
            {
                var (_, model, variant) = runs[v];
                GptModel.FuseSkinnyQkv = variant.Split(':')[0] == "1";
                Gemm.SkinnyTasksPerThread = int.Parse(variant.Split(':')[1]);
                using var cache = new KvCache(model);
                var clock = Stopwatch.StartNew();
                int done = 0;
                while (done < tokens)
                {
                    int id = ArgMax(model.Prefill(cache, [6109, 3626, 6100, 345, 11, 290, 262, 640]).Span);
                    for (int i = 0; i < 200 && done < tokens; i++, done++) id = ArgMax(model.DecodeNext(cache, id).Span);
                }
                if (round >= 0) rates[v].Add(done / clock.Elapsed.TotalSeconds);
            }
        // Each round's rate against the first variant's in the same round: a machine whose speed drifts moves both alike.
        for (int v = 0; v < runs.Length; v++)
            Console.WriteLine($"{precision} decode, {runs[v].Pages}, fused qkv:tasks {runs[v].Variant}: {Median(rates[v]):F1} tok/s " +
                $"(median of {rounds} rounds of {tokens} tokens, interleaved; rounds {string.Join(" ", rates[v].Select(x => x.ToString("F1")))}); " +
                $"median ratio to the first {Median(rates[v].Select((x, i) => x / rates[0][i]).ToList()):F3}");
        foreach (var (_, model) in models) model.Dispose();
    }

    /// <summary>Writes a book-shaped model with random weights (for timing the CLI on it): <c>... -- book-model PATH</c>.</summary>
    public static void WriteModel(string path)
    {
        using var model = new GptModel(GptConfig.Gpt2Small with { ContextLength = 256 }, new FastRandom(123));
        model.Save(path);
        Console.WriteLine($"wrote {path} ({new FileInfo(path).Length / 1e6:F0} MB)");
    }

    private static int ArgMax(ReadOnlySpan<float> v)
    {
        int best = 0;
        for (int i = 1; i < v.Length; i++) if (v[i] > v[best]) best = i;
        return best;
    }

    private static double Median(List<double> values)
    {
        var sorted = values.Order().ToList();
        return sorted.Count % 2 == 1 ? sorted[sorted.Count / 2] : (sorted[sorted.Count / 2 - 1] + sorted[sorted.Count / 2]) / 2;
    }
}

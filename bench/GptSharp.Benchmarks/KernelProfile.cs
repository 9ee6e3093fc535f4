using System.Diagnostics;
using GptSharp.Tensors;
using GptSharp.Layers;
using GptSharp.Randomness;

namespace GptSharp.Benchmarks;

/// <summary>
/// CPU seconds of each kernel at the shapes of one 124M training step (batch 2 × 256 tokens), summed over
/// the 12 blocks, on one thread: process CPU time rather than wall time, so a crowded machine skews it less.
/// <c>dotnet run -c Release --project bench/GptSharp.Benchmarks -- kernels-quick [context] [batch] [threads]</c>
/// (default 256 × 2 on 1 thread; <c>kernels-quick 1024 2 2</c> profiles GPT-2's own context).
/// </summary>
public static unsafe class KernelProfile
{
    public static void Quick(int t = 256, int b = 2, int threads = 1)
    {
        Workers.Count = threads;
        Console.WriteLine($"{Machine.Description}; context {t} × batch {b}, {threads} thread(s)");
        const int c = 768, h = 12, hidden = 3072, v = 50257, layers = 12;
        int rows = b * t;
        using var x = Fill(rows * c);
        using var y = Fill(rows * c);
        using var y2 = Fill(rows * c);
        using var mean = Fill(rows);
        using var rstd = Fill(rows);
        using var scale = Fill(c);
        using var shift = Fill(c);
        using var w = Fill(c * c);
        using var dw = Fill(c * c);
        using var bias = Fill(hidden);
        using var w1 = Fill(hidden * c);
        using var big = Fill(rows * hidden);
        using var big2 = Fill(rows * hidden);
        using var stats = Fill(2 * b * h * t);
        using var dots = Fill(b * h * t);
        using var mask = Fill(b * h * t * Kernels.DropoutBitWords(t));
        uint* bits = (uint*)mask.Data;
        float dropScale = Kernels.DropoutScale(0.1);
        using var q = Fill(rows * c);
        using var k = Fill(rows * c);
        using var vv = Fill(rows * c);
        using var logits = Fill(rows * v);
        using var dlogits = Fill(rows * v);
        using var head = Fill(v * c);
        using var dhead = Fill(v * c);
        int[] targets = Enumerable.Range(0, rows).Select(i => i * 7 % v).ToArray();
        Kernels.LayerNormForward(y.Data, mean.Data, rstd.Data, x.Data, scale.Data, shift.Data, rows, c);

        Time("layernorm fwd (x25)", 25, () => Kernels.LayerNormForward(y.Data, mean.Data, rstd.Data, x.Data, scale.Data, shift.Data, rows, c));
        Time("layernorm bwd (x25)", 25, () => Kernels.LayerNormBackward(y2.Data, scale.Data, shift.Data, y.Data, x.Data, scale.Data, mean.Data, rstd.Data, rows, c));
        Time("gelu fwd", layers, () => Kernels.GeluForward(big2.Data, big.Data, (long)rows * hidden));
        Time("gelu bwd", layers, () => Kernels.GeluBackward(big2.Data, big.Data, big2.Data, (long)rows * hidden));
        Kernels.DropoutMaskBits(bits, b * h * t, t, 0.1, new FastRandom(1));
        Time("attention fwd (mask)", layers, () => Kernels.AttentionForward(y.Data, stats.Data, bits, dropScale, q.Data, k.Data, vv.Data, b, t, c, h));
        Time("attention bwd (mask)", layers, () => Kernels.AttentionBackward(q.Data, k.Data, vv.Data, dots.Data, y.Data, stats.Data, bits, dropScale, x.Data, y2.Data, y.Data, y.Data, b, t, c, h));
        // The attention's tile products alone (one thread's share, 10^4 of each): GFLOP/s = 2·m·n·k·10^4 / s.
        Time("tile q·kT 32x32x64 (x10^4)", 1, () => { for (int i = 0; i < 10000; i++) Kernels.TileProduct(Gemm.BestPath, q.Data, c, 1, k.Data, 1024, y.Data, 32, 32, 32, 64, false); });
        Time("tile q·kT 32x32x64 ldb 1032 (x10^4)", 1, () => { for (int i = 0; i < 10000; i++) Kernels.TileProduct(Gemm.BestPath, q.Data, c, 1, k.Data, 1032, y.Data, 32, 32, 32, 64, false); });
        Time("tile p·v 32x64x32 (x10^4)", 1, () => { for (int i = 0; i < 10000; i++) Kernels.TileProduct(Gemm.BestPath, y.Data, 32, 1, vv.Data, c, y2.Data, 64, 32, 64, 32, true); });
        Time("tile pT·dO 32x64x32 (x10^4)", 1, () => { for (int i = 0; i < 10000; i++) Kernels.TileProduct(Gemm.BestPath, y.Data, 1, 32, vv.Data, c, y2.Data, c, 32, 64, 32, true); });
        Time("dropout mask (attn+2 shortcut)", layers, () =>
        {
            Kernels.DropoutMaskBits(bits, b * h * t, t, 0.1, new FastRandom(1));
            Kernels.DropoutMask(y2.Data, rows * c, 0.1, new FastRandom(2));
            Kernels.DropoutMask(y2.Data, rows * c, 0.1, new FastRandom(3));
        });
        Time("linear qkv+proj fwd (4 c×c)", layers * 4, () => Kernels.LinearForward(y.Data, x.Data, w.Data, bias.Data, rows, c, c));
        Time("linear qkv+proj bwd (4 c×c)", layers * 4, () => Kernels.LinearBackward(y2.Data, dw.Data, bias.Data, y.Data, x.Data, w.Data, rows, c, c, false));
        Time("linear fc1 fwd", layers, () => Kernels.LinearForward(big.Data, x.Data, w1.Data, bias.Data, rows, c, hidden));
        Time("linear fc1 bwd", layers, () => Kernels.LinearBackward(y.Data, w1.Data, bias.Data, big.Data, x.Data, w1.Data, rows, c, hidden, false));
        Time("linear fc2 fwd", layers, () => Kernels.LinearForward(y.Data, big.Data, w1.Data, bias.Data, rows, hidden, c));
        Time("linear fc2 bwd", layers, () => Kernels.LinearBackward(big2.Data, w1.Data, bias.Data, y.Data, big.Data, w1.Data, rows, hidden, c, false));
        Time("out head fwd", 1, () => Kernels.LinearForward(logits.Data, x.Data, head.Data, null, rows, c, v));
        Time("out head bwd", 1, () => Kernels.LinearBackward(y.Data, dhead.Data, null, dlogits.Data, x.Data, head.Data, rows, c, v, false));
        Time("softmax cross-entropy", 1, () =>
        {
            float* losses = stackalloc float[rows];
            fixed (int* tg = targets) Kernels.SoftmaxCrossEntropyForward(dlogits.Data, losses, logits.Data, tg, rows, v, -100);
        });
    }

    /// <summary>
    /// The causal attention alone at a step's shapes (12 layers' worth per line): forward, backward and the dropout
    /// mask draw, so that a change to the attention kernels can be timed in seconds rather than whole steps.
    /// <c>-- attention-quick [context] [batch] [threads] [rounds]</c>; each line is printed once per round.
    /// </summary>
    public static void Attention(int t, int b, int threads, int rounds)
    {
        Workers.Count = threads;
        Console.WriteLine($"{Machine.Description}; attention at context {t} × batch {b}, {threads} thread(s), 12 layers per line");
        const int c = 768, h = 12, layers = 12;
        int rows = b * t;
        using var q = Fill(rows * c);
        using var k = Fill(rows * c + 1);
        using var vv = Fill(rows * c + 2);
        using var dContext = Fill(rows * c + 3);
        using var context = Fill(rows * c + 4);
        using var dq = Fill(rows * c + 5);
        using var dk = Fill(rows * c + 6);
        using var dv = Fill(rows * c + 7);
        using var stats = Fill(2 * b * h * t);
        using var dots = Fill(b * h * t);
        using var mask = Fill(b * h * t * Kernels.DropoutBitWords(t));
        uint* bits = (uint*)mask.Data;
        float dropScale = Kernels.DropoutScale(0.1);
        var random = new FastRandom(1);
        for (int round = 0; round < rounds; round++)
        {
            Time("dropout bits", layers, () => Kernels.DropoutMaskBits(bits, b * h * t, t, 0.1, random));
            Time("attention fwd (mask)", layers, () => Kernels.AttentionForward(context.Data, stats.Data, bits, dropScale, q.Data, k.Data, vv.Data, b, t, c, h));
            Time("attention bwd (mask)", layers, () => Kernels.AttentionBackward(dq.Data, dk.Data, dv.Data, dots.Data, dContext.Data, stats.Data, bits, dropScale,
                q.Data, k.Data, vv.Data, context.Data, b, t, c, h));
        }
    }

    private static Tensor Fill(int n)
    {
        var t = new Tensor(n);
        new FastRandom((ulong)n).Uniform(t.Span, -0.1, 0.1);
        return t;
    }

    private static void Time(string name, int repeats, Action action)
    {
        action();
        var cpu = Process.GetCurrentProcess().TotalProcessorTime;
        var wall = Stopwatch.StartNew();
        for (int i = 0; i < repeats; i++) action();
        double cpuSeconds = (Process.GetCurrentProcess().TotalProcessorTime - cpu).TotalSeconds;
        Console.WriteLine($"{name,-36} CPU {cpuSeconds,7:F3} s   wall {wall.Elapsed.TotalSeconds,7:F3} s");
    }
}

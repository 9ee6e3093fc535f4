using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using GptSharp.Tensors;

namespace GptSharp.Layers;

/// <summary>
/// The tile operations of the fused causal attention (<see cref="Kernels.AttentionForward(float*,float*,uint*,float,float*,float*,float*,int,int,int,int)"/>):
/// one register-tiled product for all six tile products (q·kᵀ, p·v, dContext·vᵀ, pᵀ·dContext, dSᵀ·q, dS·k), and the
/// per-row online softmax and softmax backward over a 32-key tile.
/// </summary>
internal static unsafe partial class Kernels
{
    /// <summary>
    /// C[m, n] = (accumulate ? C : 0) + A·B, where A's element (i, p) is <c>a[i·aRow + p·aStep]</c> (any strides, so a
    /// transposed tile costs nothing: its elements are broadcast one at a time) and B's row p is the n contiguous floats
    /// at <c>b + p·ldb</c>. Micro-tiles of 4 rows × 2 vectors (Vector512: 4 × 32, Vector256: 4 × 16, 8 accumulators that
    /// stay in registers over the whole k loop), 1-row tiles for the last rows, one vector then scalars for the last columns.
    /// Every element is summed over p in order, whatever its tile.
    /// </summary>
    internal static void TileProduct(Gemm.KernelPath path, float* a, long aRow, long aStep, float* b, long ldb,
        float* c, long ldc, int m, int n, int k, bool accumulate)
    {
        int j = 0;
        if (path == Gemm.KernelPath.Vector512)
        {
            for (; j + 32 <= n; j += 32)
            {
                int i = 0;
                for (; i + 4 <= m; i += 4) Micro512x4(a + i * aRow, aRow, aStep, b + j, ldb, c + i * ldc + j, ldc, k, accumulate);
                for (; i < m; i++) Micro512x1(a + i * aRow, aStep, b + j, ldb, c + i * ldc + j, k, accumulate);
            }
        }
        if (path != Gemm.KernelPath.Scalar)
        {
            for (; j + 16 <= n; j += 16)
            {
                int i = 0;
                for (; i + 4 <= m; i += 4) Micro256x4(a + i * aRow, aRow, aStep, b + j, ldb, c + i * ldc + j, ldc, k, accumulate);
                for (; i < m; i++) Micro256x1(a + i * aRow, aStep, b + j, ldb, c + i * ldc + j, k, accumulate);
            }
            for (; j + 8 <= n; j += 8)
                for (int i = 0; i < m; i++)
                {
                    float* ai = a + i * aRow, bj = b + j;
                    var acc = accumulate ? Vector256.Load(c + i * ldc + j) : Vector256<float>.Zero;
                    for (int p = 0; p < k; p++) acc = Vector256.FusedMultiplyAdd(Vector256.Create(ai[p * aStep]), Vector256.Load(bj + p * ldb), acc);
                    acc.Store(c + i * ldc + j);
                }
        }
        for (; j < n; j++)
            for (int i = 0; i < m; i++)
            {
                float* ai = a + i * aRow;
                float sum = accumulate ? c[i * ldc + j] : 0f;
                for (int p = 0; p < k; p++) sum += ai[p * aStep] * b[p * ldb + j];
                c[i * ldc + j] = sum;
            }
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro512x4(float* a, long aRow, long aStep, float* b, long ldb, float* c, long ldc, int k, bool accumulate)
    {
        Vector512<float> c00, c01, c10, c11, c20, c21, c30, c31;
        if (accumulate)
        {
            c00 = Vector512.Load(c); c01 = Vector512.Load(c + 16);
            c10 = Vector512.Load(c + ldc); c11 = Vector512.Load(c + ldc + 16);
            c20 = Vector512.Load(c + 2 * ldc); c21 = Vector512.Load(c + 2 * ldc + 16);
            c30 = Vector512.Load(c + 3 * ldc); c31 = Vector512.Load(c + 3 * ldc + 16);
        }
        else c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = Vector512<float>.Zero;
        float* a0 = a, a1 = a + aRow, a2 = a1 + aRow, a3 = a2 + aRow;
        for (int p = 0; p < k; p++, b += ldb)
        {
            var b0 = Vector512.Load(b);
            var b1 = Vector512.Load(b + 16);
            long o = p * aStep;
            var x = Vector512.Create(a0[o]);
            c00 = Vector512.FusedMultiplyAdd(x, b0, c00); c01 = Vector512.FusedMultiplyAdd(x, b1, c01);
            x = Vector512.Create(a1[o]);
            c10 = Vector512.FusedMultiplyAdd(x, b0, c10); c11 = Vector512.FusedMultiplyAdd(x, b1, c11);
            x = Vector512.Create(a2[o]);
            c20 = Vector512.FusedMultiplyAdd(x, b0, c20); c21 = Vector512.FusedMultiplyAdd(x, b1, c21);
            x = Vector512.Create(a3[o]);
            c30 = Vector512.FusedMultiplyAdd(x, b0, c30); c31 = Vector512.FusedMultiplyAdd(x, b1, c31);
        }
        c00.Store(c); c01.Store(c + 16);
        c10.Store(c + ldc); c11.Store(c + ldc + 16);
        c20.Store(c + 2 * ldc); c21.Store(c + 2 * ldc + 16);
        c30.Store(c + 3 * ldc); c31.Store(c + 3 * ldc + 16);
    }

    private static void Micro512x1(float* a, long aStep, float* b, long ldb, float* c, int k, bool accumulate)
    {
        var c0 = accumulate ? Vector512.Load(c) : Vector512<float>.Zero;
        var c1 = accumulate ? Vector512.Load(c + 16) : Vector512<float>.Zero;
        for (int p = 0; p < k; p++, b += ldb)
        {
            var x = Vector512.Create(a[p * aStep]);
            c0 = Vector512.FusedMultiplyAdd(x, Vector512.Load(b), c0);
            c1 = Vector512.FusedMultiplyAdd(x, Vector512.Load(b + 16), c1);
        }
        c0.Store(c); c1.Store(c + 16);
    }

    [MethodImpl(MethodImplOptions.AggressiveOptimization)]
    private static void Micro256x4(float* a, long aRow, long aStep, float* b, long ldb, float* c, long ldc, int k, bool accumulate)
    {
        Vector256<float> c00, c01, c10, c11, c20, c21, c30, c31;
        if (accumulate)
        {
            c00 = Vector256.Load(c); c01 = Vector256.Load(c + 8);
            c10 = Vector256.Load(c + ldc); c11 = Vector256.Load(c + ldc + 8);
            c20 = Vector256.Load(c + 2 * ldc); c21 = Vector256.Load(c + 2 * ldc + 8);
            c30 = Vector256.Load(c + 3 * ldc); c31 = Vector256.Load(c + 3 * ldc + 8);
        }
        else c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = Vector256<float>.Zero;
        float* a0 = a, a1 = a + aRow, a2 = a1 + aRow, a3 = a2 + aRow;
        for (int p = 0; p < k; p++, b += ldb)
        {
            var b0 = Vector256.Load(b);
            var b1 = Vector256.Load(b + 8);
            long o = p * aStep;
            var x = Vector256.Create(a0[o]);
            c00 = Vector256.FusedMultiplyAdd(x, b0, c00); c01 = Vector256.FusedMultiplyAdd(x, b1, c01);
            x = Vector256.Create(a1[o]);
            c10 = Vector256.FusedMultiplyAdd(x, b0, c10); c11 = Vector256.FusedMultiplyAdd(x, b1, c11);
            x = Vector256.Create(a2[o]);
            c20 = Vector256.FusedMultiplyAdd(x, b0, c20); c21 = Vector256.FusedMultiplyAdd(x, b1, c21);
            x = Vector256.Create(a3[o]);
            c30 = Vector256.FusedMultiplyAdd(x, b0, c30); c31 = Vector256.FusedMultiplyAdd(x, b1, c31);
        }
        c00.Store(c); c01.Store(c + 8);
        c10.Store(c + ldc); c11.Store(c + ldc + 8);
        c20.Store(c + 2 * ldc); c21.Store(c + 2 * ldc + 8);
        c30.Store(c + 3 * ldc); c31.Store(c + 3 * ldc + 8);
    }

    private static void Micro256x1(float* a, long aStep, float* b, long ldb, float* c, int k, bool accumulate)
    {
        var c0 = accumulate ? Vector256.Load(c) : Vector256<float>.Zero;
        var c1 = accumulate ? Vector256.Load(c + 8) : Vector256<float>.Zero;
        for (int p = 0; p < k; p++, b += ldb)
        {
            var x = Vector256.Create(a[p * aStep]);
            c0 = Vector256.FusedMultiplyAdd(x, Vector256.Load(b), c0);
            c1 = Vector256.FusedMultiplyAdd(x, Vector256.Load(b + 8), c1);
        }
        c0.Store(c); c1.Store(c + 8);
    }

    /// <summary>Lanes 0..7 of a 32-wide tile row as integers, for the causal mask and the dropout bits.</summary>
    private static Vector256<int> LaneIndex => Vector256.Create(0, 1, 2, 3, 4, 5, 6, 7);

    /// <summary>The factor of lanes 8v..8v + 7 of a tile row: <paramref name="scale"/> where the dropout bit is set, 0 where not.</summary>
    private static Vector256<float> DropFactor(uint bits, int v, Vector256<float> scale)
    {
        var lanes = Vector256.Create(1, 2, 4, 8, 16, 32, 64, 128);
        var selected = Vector256.Create((int)(bits >> (8 * v)) & 0xFF) & lanes;
        return Vector256.Equals(selected, lanes).AsSingle() & scale;
    }

    /// <summary>
    /// e^x in float32 by Cephes' expf (x = n·ln 2 + r, |r| ≤ ln 2 / 2, a degree-7 polynomial, 2^n through the exponent
    /// bits): within 2 ulp, ~15 instructions per 8 lanes. The library's vector exp was 3–4 ns per element here and
    /// dominated the attention's softmax; below ln(float.MinNormal) (masked scores) the result is ~1e-38, not 0, so callers
    /// zero masked lanes themselves.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static Vector256<float> FastExp(Vector256<float> x)
    {
        x = Vector256.MinNative(Vector256.MaxNative(x, Vector256.Create(-87.33654f)), Vector256.Create(88.37626f));
        var n = Vector256.Round(x * Vector256.Create(1.44269504088896341f));
        var r = Vector256.FusedMultiplyAdd(n, Vector256.Create(-0.693359375f), x);
        r = Vector256.FusedMultiplyAdd(n, Vector256.Create(2.12194440e-4f), r);
        var p = Vector256.Create(1.9875691500E-4f);
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1.3981999507E-3f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(8.3334519073E-3f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(4.1665795894E-2f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(1.6666665459E-1f));
        p = Vector256.FusedMultiplyAdd(p, r, Vector256.Create(5.0000001201E-1f));
        p = Vector256.FusedMultiplyAdd(p, r * r, r) + Vector256.Create(1f);
        var power = (Vector256.ConvertToInt32Native(n) + Vector256.Create(127)) << 23;
        return p * power.AsSingle();
    }

    private static float HorizontalMax(Vector256<float> v)
    {
        var m = Vector128.Max(v.GetLower(), v.GetUpper());
        m = Vector128.Max(m, Vector128.Shuffle(m, Vector128.Create(2, 3, 0, 1)));
        m = Vector128.Max(m, Vector128.Shuffle(m, Vector128.Create(1, 0, 3, 2)));
        return m.ToScalar();
    }

    /// <summary>
    /// One query row of a decoding step against one key tile: <paramref name="row"/> holds the row's 32 scores (the first
    /// <paramref name="length"/> visible) and receives the tile's weights before normalization, exp(s/√d − max); the
    /// running <paramref name="max"/> and <paramref name="sum"/> are updated, and the row's output accumulator
    /// <paramref name="output"/> is rescaled when the max grows. Whole query tiles use <see cref="OnlineSoftmaxTile"/>.
    /// </summary>
    private static void OnlineSoftmaxRow(Gemm.KernelPath path, float* row, int length, float invSqrt, ref float max, ref float sum,
        float* output, int headDim)
    {
        const int tile = CausalBlock;
        if (length <= 0)
        {
            new Span<float>(row, tile).Clear();
            return;
        }
        if (path == Gemm.KernelPath.Scalar)
        {
            float tileMax = float.NegativeInfinity;
            for (int j = 0; j < length; j++) tileMax = MathF.Max(tileMax, row[j] * invSqrt);
            Rescale(ref max, ref sum, tileMax, output, headDim);
            float tileSum = 0;
            for (int j = 0; j < tile; j++)
            {
                float e = j < length ? MathF.Exp(row[j] * invSqrt - max) : 0f;
                tileSum += e;
                row[j] = e;
            }
            sum += tileSum;
            return;
        }
        var scale = Vector256.Create(invSqrt);
        var limit = Vector256.Create(length);
        var minusInfinity = Vector256.Create(float.NegativeInfinity);
        var visible0 = Vector256.LessThan(LaneIndex, limit).AsSingle();
        var visible1 = Vector256.LessThan(LaneIndex + Vector256.Create(8), limit).AsSingle();
        var visible2 = Vector256.LessThan(LaneIndex + Vector256.Create(16), limit).AsSingle();
        var visible3 = Vector256.LessThan(LaneIndex + Vector256.Create(24), limit).AsSingle();
        var x0 = Vector256.ConditionalSelect(visible0, Vector256.Load(row) * scale, minusInfinity);
        var x1 = Vector256.ConditionalSelect(visible1, Vector256.Load(row + 8) * scale, minusInfinity);
        var x2 = Vector256.ConditionalSelect(visible2, Vector256.Load(row + 16) * scale, minusInfinity);
        var x3 = Vector256.ConditionalSelect(visible3, Vector256.Load(row + 24) * scale, minusInfinity);
        Rescale(ref max, ref sum, HorizontalMax(Vector256.Max(Vector256.Max(x0, x1), Vector256.Max(x2, x3))), output, headDim);
        var m = Vector256.Create(max);
        var e0 = FastExp(x0 - m) & visible0;
        var e1 = FastExp(x1 - m) & visible1;
        var e2 = FastExp(x2 - m) & visible2;
        var e3 = FastExp(x3 - m) & visible3;
        sum += Vector256.Sum((e0 + e1) + (e2 + e3));
        e0.Store(row); e1.Store(row + 8); e2.Store(row + 16); e3.Store(row + 24);
    }

    /// <summary>The online softmax's step: a larger max rescales the sum and the output accumulator by exp(old − new).</summary>
    private static void Rescale(ref float max, ref float sum, float tileMax, float* output, int headDim)
    {
        if (!(tileMax > max)) return;
        if (max != float.NegativeInfinity)
        {
            float factor = MathF.Exp(max - tileMax);
            sum *= factor;
            var span = new Span<float>(output, headDim);
            System.Numerics.Tensors.TensorPrimitives.Multiply(span, factor, span);
        }
        max = tileMax;
    }

    /// <summary>
    /// One query row of the backward pass against one key tile: from the scores in <paramref name="p"/> and
    /// dW = dContext·vᵀ in <paramref name="ds"/>, the weights w = exp(s/√d − max)·(1/sum) from the saved statistics;
    /// <paramref name="p"/> receives the dropped weights (w times the dropout factor: what multiplied v) and
    /// <paramref name="ds"/> d(scores) = w·(dW·factor − <paramref name="dot"/>)/√d. Lanes past <paramref name="length"/> get 0.
    /// </summary>
    private static void SoftmaxBackwardRow(Gemm.KernelPath path, float* p, float* ds, int length, float invSqrt, float max, float inverse,
        float dot, uint bits, float dropScale, bool dropout)
    {
        const int tile = CausalBlock;
        if (path == Gemm.KernelPath.Scalar)
        {
            for (int j = 0; j < tile; j++)
            {
                float w = j < length ? MathF.Exp(p[j] * invSqrt - max) * inverse : 0f;
                float factor = dropout ? (((bits >> j) & 1) != 0 ? dropScale : 0f) : 1f;
                p[j] = w * factor;
                ds[j] = j < length ? w * (ds[j] * factor - dot) * invSqrt : 0f;
            }
            return;
        }
        var scale = Vector256.Create(invSqrt);
        var limit = Vector256.Create(length);
        var m = Vector256.Create(max);
        var inv = Vector256.Create(inverse);
        var d = Vector256.Create(dot);
        var dropFactor = Vector256.Create(dropScale);
        for (int v = 0; v < tile / 8; v++)
        {
            var visible = Vector256.LessThan(LaneIndex + Vector256.Create(8 * v), limit).AsSingle();
            var w = FastExp(Vector256.ConditionalSelect(visible, Vector256.Load(p + 8 * v) * scale - m, Vector256.Create(float.NegativeInfinity))) * inv;
            w &= visible;
            var dw = Vector256.Load(ds + 8 * v);
            if (dropout)
            {
                var factor = DropFactor(bits, v, dropFactor);
                (w * factor).Store(p + 8 * v);
                dw *= factor;
            }
            else w.Store(p + 8 * v);
            (w * (dw - d) * scale).Store(ds + 8 * v);
        }
    }
}

using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using GptSharp.Tensors;

namespace GptSharp.Generation;

/// <summary>
/// y = W·x (+ bias) (+ y) for one input row: <c>nn.Linear</c> at batch 1, the shape of every layer when a
/// KV cache decodes one token. Each weight is used once per token, so the work is bound by memory
/// bandwidth, not arithmetic: the kernel streams W's rows (contiguous, [out, in] as nn.Linear stores them)
/// exactly once, four rows at a time against one load of x, split by rows across <see cref="Workers"/>.
/// A packed GEMM would first copy W into panels, reading and writing it again; that is why m = 1 gets its own
/// routine.
/// </summary>
internal sealed unsafe class MatVec
{
    // The job of the current call, read by the worker delegate (a cached delegate: a call allocates nothing).
    private float* _x, _w, _bias, _y;
    private int _inFeatures, _outFeatures, _chunkRows, _chunks;
    private bool _accumulate;
    private readonly Action<int> _chunkTask;

    public MatVec() => _chunkTask = RunChunk;

    /// <summary>y[j] = (accumulate ? y[j] : 0) + Σ_p W[j, p]·x[p] + bias[j] for j &lt; outFeatures.</summary>
    public void Multiply(float* x, float* weight, float* bias, float* y, int inFeatures, int outFeatures, bool accumulate)
    {
        _x = x; _w = weight; _bias = bias; _y = y;
        _inFeatures = inFeatures; _outFeatures = outFeatures; _accumulate = accumulate;
        // A few chunks per worker keep both cores busy to the end; rows come in multiples of 4 for the kernel.
        int workers = Workers.Count;
        long work = (long)inFeatures * outFeatures;
        int chunks = work < 65_536 || workers == 1 ? 1 : workers * 4;
        _chunkRows = ((outFeatures + chunks - 1) / chunks + 3) & ~3;
        _chunks = (outFeatures + _chunkRows - 1) / _chunkRows;
        Workers.Run(_chunks, _chunkTask);
    }

    private void RunChunk(int chunk)
    {
        int begin = chunk * _chunkRows;
        int end = Math.Min(_outFeatures, begin + _chunkRows);
        Rows(_x, _w, _bias, _y, _inFeatures, begin, end, _accumulate);
    }

    /// <summary>The kernel for rows [begin, end): a vector body over four weight rows, a scalar tail.</summary>
    internal static void Rows(float* x, float* w, float* bias, float* y, int k, int begin, int end, bool accumulate)
    {
        int j = begin;
        for (; j + 4 <= end; j += 4)
        {
            float* w0 = w + (long)j * k, w1 = w0 + k, w2 = w1 + k, w3 = w2 + k;
            float s0, s1, s2, s3;
            int p = 0;
            if (Vector512.IsHardwareAccelerated && k >= 16)
            {
                Vector512<float> a0 = default, a1 = default, a2 = default, a3 = default;
                for (; p + 16 <= k; p += 16)
                {
                    var xv = Vector512.Load(x + p);
                    a0 = Vector512.FusedMultiplyAdd(Vector512.Load(w0 + p), xv, a0);
                    a1 = Vector512.FusedMultiplyAdd(Vector512.Load(w1 + p), xv, a1);
                    a2 = Vector512.FusedMultiplyAdd(Vector512.Load(w2 + p), xv, a2);
                    a3 = Vector512.FusedMultiplyAdd(Vector512.Load(w3 + p), xv, a3);
                }
                s0 = Vector512.Sum(a0); s1 = Vector512.Sum(a1); s2 = Vector512.Sum(a2); s3 = Vector512.Sum(a3);
            }
            else if (Vector256.IsHardwareAccelerated && k >= 8)
            {
                Vector256<float> a0 = default, a1 = default, a2 = default, a3 = default;
                for (; p + 8 <= k; p += 8)
                {
                    var xv = Vector256.Load(x + p);
                    a0 = Vector256.FusedMultiplyAdd(Vector256.Load(w0 + p), xv, a0);
                    a1 = Vector256.FusedMultiplyAdd(Vector256.Load(w1 + p), xv, a1);
                    a2 = Vector256.FusedMultiplyAdd(Vector256.Load(w2 + p), xv, a2);
                    a3 = Vector256.FusedMultiplyAdd(Vector256.Load(w3 + p), xv, a3);
                }
                s0 = Vector256.Sum(a0); s1 = Vector256.Sum(a1); s2 = Vector256.Sum(a2); s3 = Vector256.Sum(a3);
            }
            else
            {
                s0 = s1 = s2 = s3 = 0f;
            }
            for (; p < k; p++)
            {
                float xv = x[p];
                s0 += w0[p] * xv; s1 += w1[p] * xv; s2 += w2[p] * xv; s3 += w3[p] * xv;
            }
            Store(y, bias, j, s0, accumulate);
            Store(y, bias, j + 1, s1, accumulate);
            Store(y, bias, j + 2, s2, accumulate);
            Store(y, bias, j + 3, s3, accumulate);
        }
        for (; j < end; j++)
        {
            float* wr = w + (long)j * k;
            float s = 0f;
            for (int p = 0; p < k; p++) s += wr[p] * x[p];
            Store(y, bias, j, s, accumulate);
        }
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void Store(float* y, float* bias, int j, float sum, bool accumulate)
    {
        if (bias != null) sum += bias[j];
        y[j] = accumulate ? y[j] + sum : sum;
    }
}

using System.Runtime.CompilerServices;
using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using KernelPath = GptSharp.Tensors.Gemm.KernelPath;
using GptSharp.Tensors;

namespace GptSharp.Layers;

internal static unsafe partial class Kernels
{
    /// <summary>The book's LayerNorm epsilon.</summary>
    public const float LayerNormEps = 1e-5f;

    /// <summary>
    /// The book's LayerNorm over the last axis of [rows, channels]:
    /// output = (x − mean) / √(var + 1e-5) · scale + shift, with the biased variance (<c>unbiased=False</c>).
    /// Saves each row's mean and 1/√(var + eps) for the backward pass (either may be null in inference).
    /// </summary>
    public static void LayerNormForward(float* output, float* mean, float* rstd, float* input, float* scale, float* shift,
        int rows, int channels)
    {
        RowParallel.For(rows, channels * 4L, new LayerNormForwardKernel
        {
            Output = output, Mean = mean, Rstd = rstd, Input = input, Scale = scale, Shift = shift, Channels = channels,
        });
    }

    /// <summary>
    /// Backward of <see cref="LayerNormForward"/> (as llm.c's layernorm_backward), with n = (x − mean)·rstd
    /// and g = dOutput·scale: dInput += (g − mean(g) − n·mean(g·n))·rstd; dScale += Σ dOutput·n; dShift += Σ dOutput.
    /// Everything accumulates. dInput runs row-parallel; dScale/dShift run column-parallel (no reduction races).
    /// </summary>
    public static void LayerNormBackward(float* dInput, float* dScale, float* dShift, float* dOutput, float* input,
        float* scale, float* mean, float* rstd, int rows, int channels) =>
        LayerNormBackward(Gemm.BestPath, dInput, dScale, dShift, dOutput, input, scale, mean, rstd, rows, channels);

    internal static void LayerNormBackward(KernelPath path, float* dInput, float* dScale, float* dShift, float* dOutput, float* input,
        float* scale, float* mean, float* rstd, int rows, int channels)
    {
        RowParallel.For(rows, channels * 6L, new LayerNormInputGradKernel
        {
            Path = path, DInput = dInput, DOutput = dOutput, Input = input, Scale = scale, Mean = mean, Rstd = rstd, Channels = channels,
        });
        int columnBlocks = (channels + ColumnBlock - 1) / ColumnBlock;
        RowParallel.For(columnBlocks, (long)rows * ColumnBlock * 3, new LayerNormParamGradKernel
        {
            DScale = dScale, DShift = dShift, DOutput = dOutput, Input = input, Mean = mean, Rstd = rstd,
            Rows = rows, Channels = channels,
        });
    }

    /// <summary>Column-parallel reductions (bias and LayerNorm parameter gradients) work on blocks this wide: one
    /// Vector512 (two Vector256), so 768 channels make 48 items and 16 or 32 threads all get some. Each column's
    /// sum runs over the rows in order, whatever the block width, so the result does not depend on it.</summary>
    internal const int ColumnBlock = 16;

    private struct LayerNormForwardKernel : IRangeKernel
    {
        public float* Output, Mean, Rstd, Input, Scale, Shift;
        public int Channels;

        public readonly void Execute(int start, int end)
        {
            int c = Channels;
            var scale = new ReadOnlySpan<float>(Scale, c);
            var shift = new ReadOnlySpan<float>(Shift, c);
            for (int row = start; row < end; row++)
            {
                var x = new ReadOnlySpan<float>(Input + (long)row * c, c);
                var y = new Span<float>(Output + (long)row * c, c);
                float m = TensorPrimitives.Sum(x) / c;
                // Two passes (mean, then squared deviations) as PyTorch's var does: no cancellation.
                TensorPrimitives.Subtract(x, m, y);
                float variance = TensorPrimitives.Dot(y, y) / c;
                float s = 1f / MathF.Sqrt(variance + LayerNormEps);
                TensorPrimitives.Multiply(y, s, y);
                TensorPrimitives.FusedMultiplyAdd(y, scale, shift, y);
                if (Mean != null) Mean[row] = m;
                if (Rstd != null) Rstd[row] = s;
            }
        }
    }

    private struct LayerNormInputGradKernel : IRangeKernel
    {
        public KernelPath Path;
        public float* DInput, DOutput, Input, Scale, Mean, Rstd;
        public int Channels;

        public readonly void Execute(int start, int end)
        {
            // Hand-written rather than ops of the Simd driver: the two sums of pass 1 in one pass as a pair reduction
            // (tuple-returning ops) measured 2-4x slower in kernels-quick (layernorm bwd) on this JIT.
            int c = Channels;
            float* scale = Scale;
            for (int row = start; row < end; row++)
            {
                float m = Mean[row], s = Rstd[row];
                float* x = Input + (long)row * c, dy = DOutput + (long)row * c, dx = DInput + (long)row * c;
                // Pass 1: mean of g = dy·scale and of g·n, with n = (x − mean)·rstd.
                float gSum = 0, gnSum = 0;
                int i = 0;
                if (Path == KernelPath.Vector512)
                {
                    Vector512<float> gAcc = default, gnAcc = default, mv = Vector512.Create(m), sv = Vector512.Create(s);
                    for (; i <= c - Vector512<float>.Count; i += Vector512<float>.Count)
                    {
                        var n = (Vector512.Load(x + i) - mv) * sv;
                        var g = Vector512.Load(dy + i) * Vector512.Load(scale + i);
                        gAcc += g;
                        gnAcc += g * n;
                    }
                    gSum = Vector512.Sum(gAcc);
                    gnSum = Vector512.Sum(gnAcc);
                }
                else if (Path == KernelPath.Vector256)
                {
                    Vector256<float> gAcc = default, gnAcc = default, mv = Vector256.Create(m), sv = Vector256.Create(s);
                    for (; i <= c - Vector256<float>.Count; i += Vector256<float>.Count)
                    {
                        var n = (Vector256.Load(x + i) - mv) * sv;
                        var g = Vector256.Load(dy + i) * Vector256.Load(scale + i);
                        gAcc += g;
                        gnAcc += g * n;
                    }
                    gSum = Vector256.Sum(gAcc);
                    gnSum = Vector256.Sum(gnAcc);
                }
                for (; i < c; i++)
                {
                    float n = (x[i] - m) * s;
                    float g = dy[i] * scale[i];
                    gSum += g;
                    gnSum += g * n;
                }
                float gMean = gSum / c, gnMean = gnSum / c;
                // Pass 2: dx += (g − mean(g) − n·mean(g·n))·rstd.
                i = 0;
                if (Path == KernelPath.Vector512)
                {
                    Vector512<float> mv = Vector512.Create(m), sv = Vector512.Create(s);
                    Vector512<float> gMeanV = Vector512.Create(gMean), gnMeanV = Vector512.Create(gnMean);
                    for (; i <= c - Vector512<float>.Count; i += Vector512<float>.Count)
                    {
                        var n = (Vector512.Load(x + i) - mv) * sv;
                        var g = Vector512.Load(dy + i) * Vector512.Load(scale + i);
                        (Vector512.Load(dx + i) + (g - gMeanV - n * gnMeanV) * sv).Store(dx + i);
                    }
                }
                else if (Path == KernelPath.Vector256)
                {
                    Vector256<float> mv = Vector256.Create(m), sv = Vector256.Create(s);
                    Vector256<float> gMeanV = Vector256.Create(gMean), gnMeanV = Vector256.Create(gnMean);
                    for (; i <= c - Vector256<float>.Count; i += Vector256<float>.Count)
                    {
                        var n = (Vector256.Load(x + i) - mv) * sv;
                        var g = Vector256.Load(dy + i) * Vector256.Load(scale + i);
                        (Vector256.Load(dx + i) + (g - gMeanV - n * gnMeanV) * sv).Store(dx + i);
                    }
                }
                for (; i < c; i++)
                {
                    float n = (x[i] - m) * s;
                    float g = dy[i] * scale[i];
                    dx[i] += (g - gMean - n * gnMean) * s;
                }
            }
        }
    }

    private struct LayerNormParamGradKernel : IRangeKernel
    {
        public float* DScale, DShift, DOutput, Input, Mean, Rstd;
        public int Rows, Channels;

        public readonly void Execute(int start, int end)
        {
            int c = Channels;
            int first = start * ColumnBlock, last = Math.Min(end * ColumnBlock, c), width = last - first;
            var dScale = new Span<float>(DScale + first, width);
            var dShift = new Span<float>(DShift + first, width);
            Span<float> n = stackalloc float[width];
            for (int row = 0; row < Rows; row++)
            {
                var x = new ReadOnlySpan<float>(Input + (long)row * c + first, width);
                var dy = new ReadOnlySpan<float>(DOutput + (long)row * c + first, width);
                TensorPrimitives.Subtract(x, Mean[row], n);
                TensorPrimitives.Multiply(n, Rstd[row], n);
                TensorPrimitives.FusedMultiplyAdd(n, dy, dScale, dScale);
                TensorPrimitives.Add(dShift, dy, dShift);
            }
        }
    }
}

using System.Numerics.Tensors;
using System.Runtime.Intrinsics;
using KernelPath = GptSharp.Tensors.Gemm.KernelPath;

namespace GptSharp.Tensors;

public static unsafe partial class Kernels
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
            int c = Channels;
            for (int row = start; row < end; row++)
            {
                float m = Mean[row], s = Rstd[row];
                float* x = Input + (long)row * c, dy = DOutput + (long)row * c, dx = DInput + (long)row * c;
                // Pass 1: mean of g = dy·scale and of g·n, with n = (x − mean)·rstd. Pass 2: dx += (g − mean(g) − n·mean(g·n))·rstd.
                var op = new LayerNormGradOp { X = x, DOutput = dy, Scale = Scale, DInput = dx, Mean = m, Rstd = s };
                var (gSum, gnSum) = Simd.ReducePair(Path, c, op);
                op.GMean = gSum / c;
                op.GnMean = gnSum / c;
                Simd.Map(Path, 0, c, op);
            }
        }
    }

    /// <summary>One row of LayerNorm's input gradient: as a pair of sums, g and g·n; as a map, the update of dx.</summary>
    private struct LayerNormGradOp : IReducePairOp, IMapOp
    {
        public float* X, DOutput, Scale, DInput;
        public float Mean, Rstd, GMean, GnMean;

        public readonly (float, float) Invoke(float gSum, float gnSum, long i)
        {
            float n = (X[i] - Mean) * Rstd, g = DOutput[i] * Scale[i];
            return (gSum + g, gnSum + g * n);
        }

        public readonly (Vector256<float>, Vector256<float>) Invoke(Vector256<float> gSum, Vector256<float> gnSum, long i)
        {
            var n = (Vector256.Load(X + i) - Vector256.Create(Mean)) * Vector256.Create(Rstd);
            var g = Vector256.Load(DOutput + i) * Vector256.Load(Scale + i);
            return (gSum + g, gnSum + g * n);
        }

        public readonly (Vector512<float>, Vector512<float>) Invoke(Vector512<float> gSum, Vector512<float> gnSum, long i)
        {
            var n = (Vector512.Load(X + i) - Vector512.Create(Mean)) * Vector512.Create(Rstd);
            var g = Vector512.Load(DOutput + i) * Vector512.Load(Scale + i);
            return (gSum + g, gnSum + g * n);
        }

        public readonly void Invoke(long i)
        {
            float n = (X[i] - Mean) * Rstd, g = DOutput[i] * Scale[i];
            DInput[i] += (g - GMean - n * GnMean) * Rstd;
        }

        public readonly void Invoke256(long i)
        {
            var n = (Vector256.Load(X + i) - Vector256.Create(Mean)) * Vector256.Create(Rstd);
            var g = Vector256.Load(DOutput + i) * Vector256.Load(Scale + i);
            (Vector256.Load(DInput + i) + (g - Vector256.Create(GMean) - n * Vector256.Create(GnMean)) * Vector256.Create(Rstd)).Store(DInput + i);
        }

        public readonly void Invoke512(long i)
        {
            var n = (Vector512.Load(X + i) - Vector512.Create(Mean)) * Vector512.Create(Rstd);
            var g = Vector512.Load(DOutput + i) * Vector512.Load(Scale + i);
            (Vector512.Load(DInput + i) + (g - Vector512.Create(GMean) - n * Vector512.Create(GnMean)) * Vector512.Create(Rstd)).Store(DInput + i);
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

using System.Numerics.Tensors;
using GptSharp.Tensors;

namespace GptSharp.Layers;

internal static unsafe partial class Kernels
{
    /// <summary>
    /// <c>nn.Linear</c>: output[rows, outFeatures] = input[rows, inFeatures] · weightᵀ + bias
    /// (weight [outFeatures, inFeatures] as PyTorch stores it; bias may be null).
    /// </summary>
    /// <param name="rowExact">Each row computed exactly as it would be alone, up to <see cref="Gemm.RowExactRows"/> rows (the incremental forward).</param>
    public static void LinearForward(float* output, float* input, float* weight, float* bias,
        int rows, int inFeatures, int outFeatures, bool rowExact = false)
    {
        Gemm.MatMul(Gemm.BestPath, false, true, rows, outFeatures, inFeatures, input, inFeatures, weight, inFeatures,
            output, outFeatures, accumulate: false, bias: bias, parallel: true, rowExact: rowExact);
    }

    /// <summary>
    /// Three <see cref="LinearForward"/> calls that share their input, for few rows (a decoding step's query, key and
    /// value): one pool run for the three, the same results bit for bit (<see cref="Gemm.SkinnyLinear3"/>).
    /// </summary>
    public static void LinearForward3(float* input, int rows, int inFeatures, int outFeatures,
        float* weight0, float* bias0, float* output0, float* weight1, float* bias1, float* output1, float* weight2, float* bias2, float* output2)
        => Gemm.SkinnyLinear3(Gemm.BestPath, rows, outFeatures, inFeatures, input, weight0, weight1, weight2, bias0, bias1, bias2, output0, output1, output2);

    /// <summary>
    /// Backward of <see cref="LinearForward"/>: dInput (= or +=, see <paramref name="accumulateInput"/>) dOutput · weight;
    /// dWeight += dOutputᵀ · input; dBias += column sums of dOutput. dInput and dBias may be null.
    /// </summary>
    public static void LinearBackward(float* dInput, float* dWeight, float* dBias, float* dOutput, float* input, float* weight,
        int rows, int inFeatures, int outFeatures, bool accumulateInput)
    {
        if (dInput != null)
            Gemm.MatMul(false, false, rows, inFeatures, outFeatures, dOutput, outFeatures, weight, inFeatures,
                dInput, inFeatures, accumulate: accumulateInput);
        Gemm.MatMul(true, false, outFeatures, inFeatures, rows, dOutput, outFeatures, input, inFeatures,
            dWeight, inFeatures, accumulate: true);
        if (dBias != null) ColumnSumAccumulate(dBias, dOutput, rows, outFeatures);
    }

    /// <summary>sums[j] += Σ_rows matrix[row, j] (a bias gradient), column-parallel so no two threads touch one sum.</summary>
    public static void ColumnSumAccumulate(float* sums, float* matrix, int rows, int columns)
    {
        int blocks = (columns + ColumnBlock - 1) / ColumnBlock;
        RowParallel.For(blocks, (long)rows * ColumnBlock, new ColumnSumKernel { Sums = sums, Matrix = matrix, Rows = rows, Columns = columns });
    }

    private struct ColumnSumKernel : IRangeKernel
    {
        public float* Sums, Matrix;
        public int Rows, Columns;

        public readonly void Execute(int start, int end)
        {
            int first = start * ColumnBlock, width = Math.Min(end * ColumnBlock, Columns) - first;
            var sums = new Span<float>(Sums + first, width);
            for (int row = 0; row < Rows; row++)
                TensorPrimitives.Add(sums, new ReadOnlySpan<float>(Matrix + (long)row * Columns + first, width), sums);
        }
    }
}

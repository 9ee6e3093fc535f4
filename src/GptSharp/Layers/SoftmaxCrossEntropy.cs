using System.Numerics.Tensors;
using GptSharp.Tensors;

namespace GptSharp.Layers;

internal static unsafe partial class Kernels
{
    /// <summary>
    /// Mean cross-entropy of logits [rows, vocab] against targets [rows], PyTorch's
    /// <c>F.cross_entropy(logits, targets, ignore_index)</c>: rows whose target is
    /// <paramref name="ignoreIndex"/> count neither in the sum nor in the mean (NaN when every row is ignored).
    /// Fused backward: when <paramref name="dLogits"/> is not null it receives d mean / d logits =
    /// (softmax − onehot(target)) / count (zero rows for ignored targets), so no second pass over the logits is needed.
    /// <paramref name="rowLosses"/> [rows] is scratch for the per-row losses. Targets must be valid (checked by the caller).
    /// </summary>
    public static float SoftmaxCrossEntropyForward(float* dLogits, float* rowLosses, float* logits, int* targets,
        int rows, int vocab, int ignoreIndex)
    {
        int count = CountTargets(targets, rows, ignoreIndex);
        SoftmaxCrossEntropyRows(dLogits, rowLosses, logits, targets, rows, vocab, ignoreIndex, count > 0 ? 1f / count : 0f);
        return MeanRowLoss(rowLosses, targets, rows, ignoreIndex, count);
    }

    /// <summary>Rows whose target is not <paramref name="ignoreIndex"/>: the mean's count.</summary>
    internal static int CountTargets(int* targets, int rows, int ignoreIndex)
    {
        int count = 0;
        for (int i = 0; i < rows; i++) if (targets[i] != ignoreIndex) count++;
        return count;
    }

    /// <summary>The mean of the counted rows' losses, summed in double in row order (NaN when none counts).</summary>
    internal static float MeanRowLoss(float* rowLosses, int* targets, int rows, int ignoreIndex, int count)
    {
        if (count == 0) return float.NaN;
        double total = 0;
        for (int i = 0; i < rows; i++) if (targets[i] != ignoreIndex) total += rowLosses[i];
        return (float)(total / count);
    }

    /// <summary>
    /// The per-row part of <see cref="SoftmaxCrossEntropyForward"/> for some rows of a larger mean (a chunk of rows):
    /// <paramref name="gradScale"/> is 1/count of the whole mean. <paramref name="dLogits"/> may be
    /// <paramref name="logits"/> itself: the gradient then replaces the logits row by row.
    /// </summary>
    internal static void SoftmaxCrossEntropyRows(float* dLogits, float* rowLosses, float* logits, int* targets,
        int rows, int vocab, int ignoreIndex, float gradScale)
    {
        RowParallel.For(rows, vocab * 4L, new SoftmaxCrossEntropyKernel
        {
            DLogits = dLogits, RowLosses = rowLosses, Logits = logits, Targets = targets,
            Vocab = vocab, IgnoreIndex = ignoreIndex, GradScale = gradScale,
        });
    }

    private struct SoftmaxCrossEntropyKernel : IRangeKernel
    {
        public float* DLogits, RowLosses, Logits;
        public int* Targets;
        public int Vocab, IgnoreIndex;
        public float GradScale;

        public readonly void Execute(int start, int end)
        {
            int v = Vocab;
            const int chunk = 1024;
            Span<float> exps = stackalloc float[chunk];
            for (int row = start; row < end; row++)
            {
                var x = new ReadOnlySpan<float>(Logits + (long)row * v, v);
                int target = Targets[row];
                if (target == IgnoreIndex)
                {
                    RowLosses[row] = 0;
                    if (DLogits != null) new Span<float>(DLogits + (long)row * v, v).Clear();
                    continue;
                }
                float max = TensorPrimitives.Max(x);
                float targetLogit = x[target]; // read before the gradient may overwrite the row
                double sum = 0;
                if (DLogits != null)
                {
                    // exp(x − max) straight into the gradient row, normalized below.
                    var d = new Span<float>(DLogits + (long)row * v, v);
                    TensorPrimitives.Subtract(x, max, d);
                    TensorPrimitives.Exp(d, d);
                    sum = TensorPrimitives.Sum(d);
                    TensorPrimitives.Multiply(d, (float)(GradScale / sum), d);
                    d[target] -= GradScale;
                }
                else
                {
                    for (int offset = 0; offset < v; offset += chunk)
                    {
                        int len = Math.Min(chunk, v - offset);
                        var e = exps[..len];
                        TensorPrimitives.Subtract(x.Slice(offset, len), max, e);
                        TensorPrimitives.Exp(e, e);
                        sum += TensorPrimitives.Sum(e);
                    }
                }
                // −log softmax(x)[target] = log Σ exp(x − max) + max − x[target]
                RowLosses[row] = (float)(Math.Log(sum) + max - targetLogit);
            }
        }
    }
}

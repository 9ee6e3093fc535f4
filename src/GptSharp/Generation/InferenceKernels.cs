using System.Numerics.Tensors;

namespace GptSharp.Generation;

/// <summary>
/// The small forward-only routines the KV-cache pass needs besides the matrix products: embedding sum,
/// the book's LayerNorm and GELU, and attention of one query against cached keys and values.
/// </summary>
internal static unsafe class InferenceKernels
{
    /// <summary>destination = a + b over <paramref name="length"/> floats.</summary>
    public static void Add(float* a, float* b, float* destination, int length) =>
        TensorPrimitives.Add(new ReadOnlySpan<float>(a, length), new ReadOnlySpan<float>(b, length), new Span<float>(destination, length));

    /// <summary>
    /// The book's LayerNorm per row: (x − mean) / √(var + 1e-5) · scale + shift, with the biased variance.
    /// </summary>
    public static void LayerNorm(float* input, float* output, float* scale, float* shift, int rows, int dim)
    {
        var scaleSpan = new ReadOnlySpan<float>(scale, dim);
        var shiftSpan = new ReadOnlySpan<float>(shift, dim);
        for (int r = 0; r < rows; r++)
        {
            var x = new ReadOnlySpan<float>(input + (long)r * dim, dim);
            var y = new Span<float>(output + (long)r * dim, dim);
            float mean = TensorPrimitives.Sum(x) / dim;
            TensorPrimitives.Subtract(x, mean, y);
            float variance = TensorPrimitives.SumOfSquares(y) / dim;
            float inverseStd = 1f / MathF.Sqrt(variance + 1e-5f);
            TensorPrimitives.Multiply(y, inverseStd, y);
            TensorPrimitives.FusedMultiplyAdd(y, scaleSpan, shiftSpan, y);
        }
    }

    /// <summary>The book's GELU (tanh approximation), in place: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).</summary>
    public static void Gelu(float* data, long length)
    {
        const float c = 0.7978845608028654f; // √(2/π)
        const int chunk = 4096;
        float* tmp = stackalloc float[chunk];
        for (long offset = 0; offset < length; offset += chunk)
        {
            int n = (int)Math.Min(chunk, length - offset);
            var x = new Span<float>(data + offset, n);
            var t = new Span<float>(tmp, n);
            // t = tanh(c·(x + 0.044715·x³)) = tanh(c·x·(1 + 0.044715·x²))
            TensorPrimitives.Multiply(x, x, t);
            TensorPrimitives.Multiply(t, 0.044715f, t);
            TensorPrimitives.Add(t, 1f, t);
            TensorPrimitives.Multiply(t, x, t);
            TensorPrimitives.Multiply(t, c, t);
            TensorPrimitives.Tanh(t, t);
            // x = 0.5·x·(1 + t)
            TensorPrimitives.Add(t, 1f, t);
            TensorPrimitives.Multiply(t, x, t);
            TensorPrimitives.Multiply(t, 0.5f, x);
        }
    }

    /// <summary>
    /// softmax(q·kᵀ / scale)·V for one query over <paramref name="positions"/> cached keys/values whose rows
    /// are <paramref name="stride"/> floats apart (one head's column slice of the cache).
    /// </summary>
    public static void AttendOneQuery(float* query, float* keys, float* values, int stride, int positions, int headDim,
        float scale, float* scores, float* output)
    {
        var q = new ReadOnlySpan<float>(query, headDim);
        float max = float.NegativeInfinity;
        for (int s = 0; s < positions; s++)
        {
            float score = TensorPrimitives.Dot(q, new ReadOnlySpan<float>(keys + (long)s * stride, headDim)) / scale;
            scores[s] = score;
            if (score > max) max = score;
        }
        var weights = new Span<float>(scores, positions);
        TensorPrimitives.Subtract(weights, max, weights);
        TensorPrimitives.Exp(weights, weights);
        float inverseSum = 1f / TensorPrimitives.Sum(weights);
        var o = new Span<float>(output, headDim);
        o.Clear();
        for (int s = 0; s < positions; s++)
            TensorPrimitives.MultiplyAdd(new ReadOnlySpan<float>(values + (long)s * stride, headDim), weights[s] * inverseSum, o, o);
    }
}

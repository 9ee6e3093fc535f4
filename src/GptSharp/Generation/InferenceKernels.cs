using System.Numerics.Tensors;

namespace GptSharp.Generation;

/// <summary>
/// Attention of one query against cached keys and values: the one routine the KV-cache pass needs that the
/// training kernels (<see cref="GptSharp.Tensors.Kernels"/>, full causal attention over a whole sequence) do not have.
/// </summary>
internal static unsafe class InferenceKernels
{
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

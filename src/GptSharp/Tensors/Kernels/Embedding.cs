using System.Numerics.Tensors;

namespace GptSharp.Tensors;

public static unsafe partial class Kernels
{
    /// <summary>
    /// The book's <c>tok_emb(in_idx) + pos_emb(arange(seq_len))</c>:
    /// output[b,t,:] = tokenTable[ids[b,t],:] + positionTable[t,:]. Ids must already be checked to lie in the table.
    /// </summary>
    public static void EmbeddingForward(float* output, int* ids, float* tokenTable, float* positionTable,
        int batch, int seq, int channels)
    {
        for (int b = 0; b < batch; b++)
        {
            for (int t = 0; t < seq; t++)
            {
                int row = b * seq + t;
                var token = new ReadOnlySpan<float>(tokenTable + (long)ids[row] * channels, channels);
                var position = new ReadOnlySpan<float>(positionTable + (long)t * channels, channels);
                TensorPrimitives.Add(token, position, new Span<float>(output + (long)row * channels, channels));
            }
        }
    }

    /// <summary>
    /// Backward of <see cref="EmbeddingForward"/>: a scatter-add. Every occurrence of a token adds its
    /// row of <paramref name="dOutput"/> to that token's gradient row (ids repeat, so this accumulates),
    /// and every position adds to its position row. Sequential: it is a tiny part of a step and a
    /// parallel scatter would race on repeated ids.
    /// </summary>
    public static void EmbeddingBackward(float* dTokenTable, float* dPositionTable, float* dOutput, int* ids,
        int batch, int seq, int channels)
    {
        for (int b = 0; b < batch; b++)
        {
            for (int t = 0; t < seq; t++)
            {
                int row = b * seq + t;
                var d = new ReadOnlySpan<float>(dOutput + (long)row * channels, channels);
                var token = new Span<float>(dTokenTable + (long)ids[row] * channels, channels);
                var position = new Span<float>(dPositionTable + (long)t * channels, channels);
                TensorPrimitives.Add(token, d, token);
                TensorPrimitives.Add(position, d, position);
            }
        }
    }
}

using System.Numerics.Tensors;
using GptSharp.Tensors;

namespace GptSharp.Layers;

internal static unsafe partial class Kernels
{
    /// <summary>
    /// The book's <c>tok_emb(in_idx) + pos_emb(arange(seq_len))</c>:
    /// output[b,t,:] = tokenTable[ids[b,t],:] + positionTable[t,:]. Ids must already be checked to lie in the table.
    /// Row-parallel.
    /// </summary>
    public static void EmbeddingForward(float* output, int* ids, float* tokenTable, float* positionTable,
        int batch, int seq, int channels)
    {
        RowParallel.For(batch * seq, channels, new EmbeddingForwardKernel
        {
            Output = output, Ids = ids, TokenTable = tokenTable, PositionTable = positionTable, Seq = seq, Channels = channels,
        });
    }

    /// <summary>
    /// Backward of <see cref="EmbeddingForward"/>: a scatter-add. Every occurrence of a token adds its
    /// row of <paramref name="dOutput"/> to that token's gradient row (ids repeat, so this accumulates),
    /// and every position adds to its position row. Column-parallel: each task owns a block of columns of
    /// every row, so repeated ids never race, and each element sums its rows in order whatever the thread count.
    /// </summary>
    public static void EmbeddingBackward(float* dTokenTable, float* dPositionTable, float* dOutput, int* ids,
        int batch, int seq, int channels)
    {
        int columnBlocks = (channels + ColumnBlock - 1) / ColumnBlock;
        RowParallel.For(columnBlocks, 2L * batch * seq * ColumnBlock, new EmbeddingBackwardKernel
        {
            DTokenTable = dTokenTable, DPositionTable = dPositionTable, DOutput = dOutput, Ids = ids,
            Rows = batch * seq, Seq = seq, Channels = channels,
        });
    }

    private struct EmbeddingForwardKernel : IRangeKernel
    {
        public float* Output, TokenTable, PositionTable;
        public int* Ids;
        public int Seq, Channels;

        public readonly void Execute(int start, int end)
        {
            int c = Channels;
            for (int row = start; row < end; row++)
            {
                var token = new ReadOnlySpan<float>(TokenTable + (long)Ids[row] * c, c);
                var position = new ReadOnlySpan<float>(PositionTable + (long)(row % Seq) * c, c);
                TensorPrimitives.Add(token, position, new Span<float>(Output + (long)row * c, c));
            }
        }
    }

    private struct EmbeddingBackwardKernel : IRangeKernel
    {
        public float* DTokenTable, DPositionTable, DOutput;
        public int* Ids;
        public int Rows, Seq, Channels;

        public readonly void Execute(int start, int end)
        {
            int c = Channels, first = start * ColumnBlock, width = Math.Min(end * ColumnBlock, c) - first;
            for (int row = 0; row < Rows; row++)
            {
                var d = new ReadOnlySpan<float>(DOutput + (long)row * c + first, width);
                var token = new Span<float>(DTokenTable + (long)Ids[row] * c + first, width);
                var position = new Span<float>(DPositionTable + (long)(row % Seq) * c + first, width);
                TensorPrimitives.Add(token, d, token);
                TensorPrimitives.Add(position, d, position);
            }
        }
    }
}

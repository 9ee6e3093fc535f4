namespace GptSharp.Data;

/// <summary>
/// A batch of token ids, shape [BatchSize, SequenceLength], row-major: what the book passes to the
/// model as a LongTensor. Ids are ints because GPT-2's vocabulary (50,257) fits easily.
/// </summary>
public sealed class TokenBatch
{
    public TokenBatch(int[] ids, int batchSize, int sequenceLength)
    {
        if (batchSize <= 0 || sequenceLength <= 0)
            throw new ArgumentException($"A token batch needs a positive batch size and sequence length, got [{batchSize}, {sequenceLength}].");
        if (ids.Length != batchSize * sequenceLength)
            throw new ArgumentException($"{ids.Length} ids do not fill a batch of shape [{batchSize}, {sequenceLength}].");
        Ids = ids;
        BatchSize = batchSize;
        SequenceLength = sequenceLength;
    }

    /// <summary>One sequence as a batch of one (the book's <c>unsqueeze(0)</c>).</summary>
    public static TokenBatch FromSequence(ReadOnlySpan<int> ids) => new(ids.ToArray(), 1, ids.Length);

    /// <summary>The ids, row after row.</summary>
    public int[] Ids { get; }

    public int BatchSize { get; }

    public int SequenceLength { get; }

    /// <summary>Number of ids, the book's <c>input_batch.numel()</c>.</summary>
    public int Count => Ids.Length;

    public int this[int row, int position] => Ids[row * SequenceLength + position];

    /// <summary>The ids of one row.</summary>
    public ReadOnlySpan<int> Row(int row) => Ids.AsSpan(row * SequenceLength, SequenceLength);

    public override string ToString() => $"TokenBatch[{BatchSize}, {SequenceLength}]";
}

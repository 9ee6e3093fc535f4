namespace GptSharp.Data;

/// <summary>
/// The book's <c>GPTDatasetV1</c>: fixed-length windows over a run of token ids. Window i starts at
/// token <c>i · stride</c>; its input is <c>maxLength</c> ids and its target the same ids shifted one
/// to the right (the next token at every position). Like the book's
/// <c>for i in range(0, len(token_ids) - max_length, stride)</c>, a window starts only where at
/// least one more token follows it, so the last target id always exists.
/// </summary>
/// <remarks>
/// Nothing is copied up front (the book materializes every window as a tensor): windows are read
/// from <see cref="Tokens"/> on demand, which also works over a memory-mapped corpus.
/// </remarks>
public sealed class GptDatasetV1
{
    public GptDatasetV1(ITokenSequence tokens, int maxLength, int stride)
    {
        ArgumentNullException.ThrowIfNull(tokens);
        if (maxLength <= 0) throw new ArgumentException($"max_length must be positive, got {maxLength}.");
        if (stride <= 0) throw new ArgumentException($"stride must be positive, got {stride}.");
        Tokens = tokens;
        MaxLength = maxLength;
        Stride = stride;
        long span = tokens.Count - maxLength;
        long windows = span > 0 ? (span + stride - 1) / stride : 0;
        if (windows > int.MaxValue)
            throw new ArgumentException($"{windows} windows of {maxLength} tokens with stride {stride} are more than one dataset can index; use a larger stride.");
        Count = (int)windows;
    }

    /// <summary>The ids the windows are taken from.</summary>
    public ITokenSequence Tokens { get; }

    /// <summary>Length of every input and target window (the model's context length in the book).</summary>
    public int MaxLength { get; }

    /// <summary>Distance between the starts of consecutive windows; windows overlap when it is below <see cref="MaxLength"/>.</summary>
    public int Stride { get; }

    /// <summary>Number of windows (the book's <c>len(dataset)</c>).</summary>
    public int Count { get; }

    /// <summary>Smallest number of tokens that gives at least one window: one window plus the token after it.</summary>
    public static long TokensNeededForOneWindow(int maxLength) => maxLength + 1L;

    /// <summary>Copies window <paramref name="index"/>: input ids into <paramref name="input"/>, target ids into <paramref name="target"/>.</summary>
    public void GetItem(int index, Span<int> input, Span<int> target)
    {
        if ((uint)index >= (uint)Count)
            throw new ArgumentOutOfRangeException(nameof(index), $"Window {index} does not exist; the dataset has {Count}.");
        if (input.Length != MaxLength || target.Length != MaxLength)
            throw new ArgumentException($"Input and target buffers must hold {MaxLength} ids.");
        long start = (long)index * Stride;
        Tokens.CopyTo(start, input);
        Tokens.CopyTo(start + 1, target);
    }
}

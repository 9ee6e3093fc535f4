namespace GptSharp.Data;

/// <summary>
/// A read-only run of token ids that a dataset slides its windows over: either ids in memory
/// (<see cref="ArrayTokenSequence"/>, what the book's <c>tokenizer.encode(txt)</c> returns) or a
/// pre-tokenized file mapped into memory (<see cref="TokenFile"/>), so a corpus larger than RAM
/// can be trained on. Indices are 64-bit because a 10 GB corpus has billions of tokens.
/// </summary>
public interface ITokenSequence
{
    /// <summary>Number of token ids.</summary>
    long Count { get; }

    /// <summary>Copies ids [start, start + destination.Length) into <paramref name="destination"/>.</summary>
    void CopyTo(long start, Span<int> destination);
}

/// <summary>Token ids held in a managed array.</summary>
internal sealed class ArrayTokenSequence : ITokenSequence
{
    private readonly int[] _ids;
    private readonly int _offset;
    private readonly int _count;

    public ArrayTokenSequence(int[] ids) : this(ids, 0, ids.Length) { }

    /// <summary>A view of <paramref name="count"/> ids of <paramref name="ids"/> starting at <paramref name="offset"/> (no copy).</summary>
    public ArrayTokenSequence(int[] ids, int offset, int count)
    {
        ArgumentNullException.ThrowIfNull(ids);
        if (offset < 0 || count < 0 || offset + (long)count > ids.Length)
            throw new ArgumentException($"The range [{offset}, {offset + (long)count}) is outside the {ids.Length} token ids.");
        _ids = ids;
        _offset = offset;
        _count = count;
    }

    public long Count => _count;

    public int this[int index] => _ids[_offset + index];

    public void CopyTo(long start, Span<int> destination)
    {
        if (start < 0 || start + destination.Length > _count)
            throw new ArgumentOutOfRangeException(nameof(start), $"Ids [{start}, {start + destination.Length}) are outside a sequence of {_count}.");
        _ids.AsSpan(_offset + (int)start, destination.Length).CopyTo(destination);
    }
}

using System.IO.MemoryMappedFiles;
using System.Runtime.Intrinsics;

namespace GptSharp.Data;

/// <summary>
/// Little-endian uint16 token ids at a byte offset of a file, read through a memory map (the part every token file format
/// shares: GptSharp's own, llm.c's shards, nanoGPT's bare ids), so a corpus of any size trains without being loaded into RAM.
/// </summary>
internal sealed unsafe class MappedUInt16Ids : IDisposable
{
    private readonly MemoryMappedFile? _map;
    private readonly MemoryMappedViewAccessor? _view;
    private byte* _base;
    private readonly ushort* _ids;

    /// <summary>Maps <paramref name="count"/> ids from byte <paramref name="dataOffset"/> of <paramref name="path"/> (the caller checked the length).</summary>
    public MappedUInt16Ids(string path, long dataOffset, long count)
    {
        Path = path;
        DataOffset = dataOffset;
        Count = count;
        long length = dataOffset + 2 * count;
        if (length == 0) return; // nothing to map (a map of zero bytes is refused)
        _map = MemoryMappedFile.CreateFromFile(path, FileMode.Open, null, 0, MemoryMappedFileAccess.Read);
        try
        {
            _view = _map.CreateViewAccessor(0, length, MemoryMappedFileAccess.Read);
            _view.SafeMemoryMappedViewHandle.AcquirePointer(ref _base);
            _ids = (ushort*)(_base + _view.PointerOffset + dataOffset);
        }
        catch
        {
            _view?.Dispose();
            _map.Dispose();
            throw;
        }
    }

    public string Path { get; }
    public long DataOffset { get; }
    public long Count { get; }

    public ushort this[long index] => _ids[index];

    public void CopyTo(long start, Span<int> destination)
    {
        if (start < 0 || start + destination.Length > Count)
            throw new ArgumentOutOfRangeException(nameof(start), $"Ids [{start}, {start + destination.Length}) are outside {Path} ({Count} ids).");
        ushort* source = _ids + start;
        for (int i = 0; i < destination.Length; i++) destination[i] = source[i];
    }

    /// <summary>
    /// Checks that every id is below <paramref name="vocabSize"/>, before any training: an id outside the vocabulary would
    /// otherwise stop a run hours in. The error names the file, the byte offset, the token's index and the id.
    /// </summary>
    public void CheckIds(int vocabSize)
    {
        long index = FindIdAtLeast(vocabSize);
        if (index >= 0)
            throw new InvalidDataException($"{Path}: token id {_ids[index]} at byte offset {DataOffset + 2 * index} (token {index:N0}) is outside the vocabulary of {vocabSize} ids: the file is corrupt or was made for another tokenizer.");
    }

    /// <summary>The index of the first id that is at least <paramref name="limit"/>, or -1 (a vectorized scan of the mapped ids).</summary>
    public long FindIdAtLeast(int limit, int maxVectorBits = 512)
    {
        if (limit > ushort.MaxValue) return -1;
        const int Chunk = 1 << 30; // span lengths are ints; a token file may hold more ids
        for (long start = 0; start < Count; start += Chunk)
        {
            int n = (int)Math.Min(Chunk, Count - start);
            int found = FirstAtLeast(new ReadOnlySpan<ushort>(_ids + start, n), (ushort)limit, maxVectorBits);
            if (found >= 0) return start + found;
        }
        return -1;
    }

    /// <summary>
    /// The first index of <paramref name="ids"/> holding a value of at least <paramref name="limit"/>, or -1: four vectors per
    /// iteration folded with max, then one compare (memory-bound, so the loop does as little as possible per byte).
    /// <paramref name="maxVectorBits"/> (512, 256 or 0) lets tests run the narrower paths on a wider machine.
    /// </summary>
    internal static int FirstAtLeast(ReadOnlySpan<ushort> ids, ushort limit, int maxVectorBits = 512)
    {
        ref ushort start = ref System.Runtime.InteropServices.MemoryMarshal.GetReference(ids);
        int i = 0;
        if (maxVectorBits >= 512 && Vector512.IsHardwareAccelerated)
        {
            var bound = Vector512.Create(limit);
            int width = Vector512<ushort>.Count;
            for (; i <= ids.Length - 4 * width; i += 4 * width)
            {
                var m = Vector512.Max(Vector512.Max(Vector512.LoadUnsafe(ref start, (nuint)i), Vector512.LoadUnsafe(ref start, (nuint)(i + width))),
                    Vector512.Max(Vector512.LoadUnsafe(ref start, (nuint)(i + 2 * width)), Vector512.LoadUnsafe(ref start, (nuint)(i + 3 * width))));
                if (Vector512.GreaterThanOrEqualAny(m, bound)) break;
            }
        }
        if (maxVectorBits >= 256 && Vector256.IsHardwareAccelerated)
        {
            var bound = Vector256.Create(limit);
            int width = Vector256<ushort>.Count;
            for (; i <= ids.Length - 4 * width; i += 4 * width)
            {
                var m = Vector256.Max(Vector256.Max(Vector256.LoadUnsafe(ref start, (nuint)i), Vector256.LoadUnsafe(ref start, (nuint)(i + width))),
                    Vector256.Max(Vector256.LoadUnsafe(ref start, (nuint)(i + 2 * width)), Vector256.LoadUnsafe(ref start, (nuint)(i + 3 * width))));
                if (Vector256.GreaterThanOrEqualAny(m, bound)) break;
            }
        }
        // The tail, or the block the vectors flagged: find the exact index.
        for (; i < ids.Length; i++)
            if (ids[i] >= limit) return i;
        return -1;
    }

    public void Dispose()
    {
        if (_base != null)
        {
            _view!.SafeMemoryMappedViewHandle.ReleasePointer();
            _base = null;
        }
        _view?.Dispose();
        _map?.Dispose();
    }
}

using System.IO.MemoryMappedFiles;
using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics;
using GptSharp.Tensors;

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
    /// block folded with max, then one compare (memory-bound, so the loop does as little as possible per byte).
    /// <paramref name="maxVectorBits"/> (512, 256 or 0) lets tests run the narrower paths on a wider machine.
    /// </summary>
    internal static int FirstAtLeast(ReadOnlySpan<ushort> ids, ushort limit, int maxVectorBits = 512)
    {
        var path = Gemm.BestPath;
        if (maxVectorBits < 512 && path == Gemm.KernelPath.Vector512) path = Gemm.KernelPath.Vector256;
        if (maxVectorBits < 256) path = Gemm.KernelPath.Scalar;
        fixed (ushort* p = ids)
            return (int)Simd.FindFirst(path, ids.Length, 4 * Vector256<ushort>.Count, 4 * Vector512<ushort>.Count, new AtLeastOp { Ids = p, Limit = limit });
    }

    private struct AtLeastOp : ISearchOp
    {
        public ushort* Ids;
        public ushort Limit;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly bool Matches(long i) => Ids[i] >= Limit;

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly bool Any256(long i)
        {
            const int w = 16;
            var m = Vector256.Max(Vector256.Max(Vector256.Load(Ids + i), Vector256.Load(Ids + i + w)), Vector256.Max(Vector256.Load(Ids + i + 2 * w), Vector256.Load(Ids + i + 3 * w)));
            return Vector256.GreaterThanOrEqualAny(m, Vector256.Create(Limit));
        }

        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public readonly bool Any512(long i)
        {
            const int w = 32;
            var m = Vector512.Max(Vector512.Max(Vector512.Load(Ids + i), Vector512.Load(Ids + i + w)), Vector512.Max(Vector512.Load(Ids + i + 2 * w), Vector512.Load(Ids + i + 3 * w)));
            return Vector512.GreaterThanOrEqualAny(m, Vector512.Create(Limit));
        }
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

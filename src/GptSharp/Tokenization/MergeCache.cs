namespace GptSharp.Tokenization;

/// <summary>
/// Remembers the ids of pieces that needed byte-pair merging (pieces that are whole tokens are found in the
/// vocabulary directly), so a word seen before costs one hash lookup. One cache per thread, so lookups need
/// no lock; it empties itself when full, which bounds its memory (about 4 MB).
/// </summary>
internal sealed class MergeCache
{
    /// <summary>Longer pieces are merged every time rather than cached (they are rare and would crowd the cache).</summary>
    public const int MaxPieceLength = 64;

    private const int SlotCount = 1 << 16;       // power of two
    private const int MaxEntries = SlotCount / 2;
    private const int KeyCapacity = MaxEntries * 16;
    private const int IdCapacity = MaxEntries * 8;

    [ThreadStatic] private static MergeCache? t_current;

    /// <summary>This thread's cache.</summary>
    public static MergeCache Current => t_current ??= new MergeCache();

    private readonly int[] _slots = new int[SlotCount];         // entry index + 1, 0 = empty
    private readonly ulong[] _hashes = new ulong[MaxEntries];
    private readonly int[] _keyStart = new int[MaxEntries + 1];  // entry e's key is _keys[_keyStart[e] .. _keyStart[e + 1]]
    private readonly int[] _idStart = new int[MaxEntries + 1];   // entry e's ids are _ids[_idStart[e] .. _idStart[e + 1]]
    private readonly byte[] _keys = new byte[KeyCapacity];
    private readonly int[] _ids = new int[IdCapacity];
    private int _count;

    public int Count => _count;

    /// <summary>The cached ids of <paramref name="piece"/> (whose hash is <paramref name="hash"/>), or false.</summary>
    public bool TryGet(ReadOnlySpan<byte> piece, ulong hash, out ReadOnlySpan<int> ids)
    {
        int mask = SlotCount - 1;
        int slot = (int)hash & mask;
        while (true)
        {
            int entry = _slots[slot] - 1;
            if (entry < 0) break;
            if (_hashes[entry] == hash)
            {
                int keyStart = _keyStart[entry];
                if (_keys.AsSpan(keyStart, _keyStart[entry + 1] - keyStart).SequenceEqual(piece))
                {
                    int idStart = _idStart[entry];
                    ids = _ids.AsSpan(idStart, _idStart[entry + 1] - idStart);
                    return true;
                }
            }
            slot = (slot + 1) & mask;
        }
        ids = default;
        return false;
    }

    /// <summary>Stores the ids of a piece that <see cref="TryGet"/> did not find.</summary>
    public void Add(ReadOnlySpan<byte> piece, ulong hash, ReadOnlySpan<int> ids)
    {
        if (piece.Length > MaxPieceLength) return;
        if (_count == MaxEntries || _keyStart[_count] + piece.Length > KeyCapacity || _idStart[_count] + ids.Length > IdCapacity)
            Clear();
        int entry = _count++;
        _hashes[entry] = hash;
        piece.CopyTo(_keys.AsSpan(_keyStart[entry]));
        _keyStart[entry + 1] = _keyStart[entry] + piece.Length;
        ids.CopyTo(_ids.AsSpan(_idStart[entry]));
        _idStart[entry + 1] = _idStart[entry] + ids.Length;

        int mask = SlotCount - 1;
        int slot = (int)hash & mask;
        while (_slots[slot] != 0) slot = (slot + 1) & mask;
        _slots[slot] = entry + 1;
    }

    public void Clear()
    {
        Array.Clear(_slots);
        _count = 0;
    }
}

using System.Buffers;
using System.Runtime.CompilerServices;

namespace GptSharp.Tokenization;

/// <summary>
/// A growable buffer of token ids: the encoder appends to it without a per-token allocation and copies the
/// result out once. Buffers up to <see cref="PooledLimit"/> ids are rented from the shared array pool (call
/// <see cref="Dispose"/> to return them); bigger ones are plain arrays, so that encoding a corpus does not leave
/// a huge buffer parked in the pool.
/// </summary>
internal struct IdList : IDisposable
{
    private const int PooledLimit = 1 << 20;

    private int[] _items;
    private int _count;

    public IdList(int capacity)
    {
        _items = Allocate(Math.Max(capacity, 16));
        _count = 0;
    }

    public readonly int Count => _count;

    public readonly ReadOnlySpan<int> AsSpan() => _items.AsSpan(0, _count);

    /// <summary>The ids as memory (valid until the list grows or is disposed).</summary>
    public readonly ReadOnlyMemory<int> AsMemory() => _items.AsMemory(0, _count);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(int id)
    {
        int[] items = _items;
        int count = _count;
        if ((uint)count < (uint)items.Length)
        {
            items[count] = id;
            _count = count + 1;
        }
        else
        {
            AddWithResize(id);
        }
    }

    /// <summary>Empties the list and keeps its buffer, for a caller that fills lists of the same size again and again.</summary>
    public void Clear() => _count = 0;

    public void AddRange(ReadOnlySpan<int> ids)
    {
        if (_count + ids.Length > _items.Length) Grow(_count + ids.Length);
        ids.CopyTo(_items.AsSpan(_count));
        _count += ids.Length;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void AddWithResize(int id)
    {
        Grow(_count + 1);
        _items[_count++] = id;
    }

    private void Grow(int needed)
    {
        var bigger = Allocate(Math.Max(needed, (int)Math.Min(Array.MaxLength, 2L * _items.Length)));
        _items.AsSpan(0, _count).CopyTo(bigger);
        Release(_items);
        _items = bigger;
    }

    private static int[] Allocate(int length) =>
        length <= PooledLimit ? ArrayPool<int>.Shared.Rent(length) : GC.AllocateUninitializedArray<int>(length);

    private static void Release(int[] items)
    {
        if (items.Length <= PooledLimit) ArrayPool<int>.Shared.Return(items);
    }

    public readonly int[] ToArray()
    {
        // Uninitialized: every element is overwritten by the copy (saves zeroing big results).
        var result = GC.AllocateUninitializedArray<int>(_count);
        AsSpan().CopyTo(result);
        return result;
    }

    public void Dispose()
    {
        if (_items != null) Release(_items);
        _items = null!;
        _count = 0;
    }
}

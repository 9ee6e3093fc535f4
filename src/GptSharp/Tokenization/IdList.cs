using System.Buffers;
using System.Runtime.CompilerServices;

namespace GptSharp.Tokenization;

/// <summary>
/// A growable buffer of token ids rented from the shared array pool: the encoder appends to it without a
/// per-token allocation and copies the result out once. Call <see cref="Dispose"/> to return the buffer.
/// </summary>
internal struct IdList : IDisposable
{
    private int[] _items;
    private int _count;

    public IdList(int capacity)
    {
        _items = ArrayPool<int>.Shared.Rent(Math.Max(capacity, 16));
        _count = 0;
    }

    public readonly int Count => _count;

    public readonly ReadOnlySpan<int> AsSpan() => _items.AsSpan(0, _count);

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
        var bigger = ArrayPool<int>.Shared.Rent(Math.Max(needed, (int)Math.Min(Array.MaxLength, 2L * _items.Length)));
        _items.AsSpan(0, _count).CopyTo(bigger);
        ArrayPool<int>.Shared.Return(_items);
        _items = bigger;
    }

    public readonly int[] ToArray() => AsSpan().ToArray();

    public void Dispose()
    {
        if (_items != null) ArrayPool<int>.Shared.Return(_items);
        _items = null!;
        _count = 0;
    }
}

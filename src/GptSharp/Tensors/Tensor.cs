using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace GptSharp.Tensors;

/// <summary>
/// A dense float32 tensor in row-major layout. The elements live in 64-byte-aligned native memory,
/// so the garbage collector neither moves nor scans them and SIMD loads never straddle a cache line.
/// Dispose it (or the object that owns it) to free the memory deterministically.
/// </summary>
public sealed unsafe class Tensor : IDisposable
{
    /// <summary>Alignment of every buffer: one cache line, the width of a Vector512.</summary>
    public const int Alignment = 64;

    private float* _data;
    private void* _allocation; // what calloc returned; _data is this rounded up to the alignment
    private readonly long _length;
    private readonly int[] _shape;
    // False for a view over memory owned by someone else (the model's activation buffers).
    private readonly bool _ownsMemory = true;

    /// <summary>
    /// Set by a producer whose result can be differentiated (the model's logits): called by
    /// <c>Loss.Backward</c> with the gradient of the loss with respect to this tensor.
    /// This is the whole "tape": the model keeps its own activations and runs its backward pass.
    /// </summary>
    public Action<Tensor>? BackwardFunction { get; set; }

    /// <summary>
    /// Where a loss writes d loss / d this tensor before calling <see cref="BackwardFunction"/>
    /// (PyTorch's <c>.grad</c> of a non-leaf). The model presets it to a buffer it owns, so a training
    /// step allocates nothing; a loss creates it when it is missing.
    /// </summary>
    public Tensor? Grad { get; set; }

    /// <summary>Allocates a zero-filled tensor of the given shape.</summary>
    public Tensor(params int[] shape)
    {
        _shape = (int[])shape.Clone();
        long length = 1;
        foreach (int d in _shape)
        {
            if (d < 0) throw new ArgumentException($"Tensor dimensions must be non-negative, got [{string.Join(", ", shape)}].");
            length *= d;
        }
        _length = length;
        nuint bytes = (nuint)Math.Max(1, length) * sizeof(float);
        // calloc rather than aligned malloc + clear: large blocks come as fresh zero pages from the OS,
        // so memory that is never written (a loaded model's unused gradients) costs no RAM, and
        // building a model does not spend seconds clearing gigabytes. Aligned by hand to one cache line.
        _allocation = NativeMemory.AllocZeroed(bytes + Alignment);
        _data = (float*)(((nuint)_allocation + (Alignment - 1)) & ~(nuint)(Alignment - 1));
        GC.AddMemoryPressure((long)bytes);
    }

    private Tensor(float* data, int[] shape, long length)
    {
        _data = data;
        _shape = shape;
        _length = length;
        _ownsMemory = false;
    }

    /// <summary>
    /// A tensor of the given shape over <paramref name="data"/>, which someone else owns and frees:
    /// the view is valid only while that memory lives, and disposing the view frees nothing.
    /// </summary>
    public static Tensor View(float* data, params int[] shape)
    {
        long length = 1;
        foreach (int d in shape)
        {
            if (d < 0) throw new ArgumentException($"Tensor dimensions must be non-negative, got [{string.Join(", ", shape)}].");
            length *= d;
        }
        return new Tensor(data, (int[])shape.Clone(), length);
    }

    /// <summary>Creates a tensor holding a copy of <paramref name="values"/> with the given shape.</summary>
    public static Tensor FromArray(ReadOnlySpan<float> values, params int[] shape)
    {
        var t = new Tensor(shape);
        if (values.Length != t.Length)
            throw new ArgumentException($"{values.Length} values do not fill a tensor of shape [{string.Join(", ", shape)}] ({t.Length} elements).");
        values.CopyTo(t.Span);
        return t;
    }

    /// <summary>The sizes of the dimensions, outermost first.</summary>
    public ReadOnlySpan<int> Shape => _shape;

    /// <summary>A copy of the shape, for display and serialization.</summary>
    public int[] ShapeArray => (int[])_shape.Clone();

    /// <summary>Number of dimensions.</summary>
    public int Rank => _shape.Length;

    /// <summary>Total number of elements (PyTorch's <c>numel()</c>).</summary>
    public long Length => _length;

    /// <summary>Size of dimension <paramref name="dim"/>; negative values count from the end.</summary>
    public int Size(int dim) => _shape[dim < 0 ? _shape.Length + dim : dim];

    /// <summary>Raw pointer to the first element. Valid until the tensor is disposed.</summary>
    public float* Data
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get
        {
            if (_data == null) ThrowDisposed();
            return _data;
        }
    }

    /// <summary>The elements as a span (tensors are limited to 2^31 - 1 elements).</summary>
    public Span<float> Span => new(Data, checked((int)_length));

    public float this[long index]
    {
        get { if ((ulong)index >= (ulong)_length) throw new IndexOutOfRangeException(); return Data[index]; }
        set { if ((ulong)index >= (ulong)_length) throw new IndexOutOfRangeException(); Data[index] = value; }
    }

    /// <summary>Element of a 2-D tensor.</summary>
    public float this[int row, int col]
    {
        get => this[(long)row * _shape[1] + col];
        set => this[(long)row * _shape[1] + col] = value;
    }

    /// <summary>Element of a 3-D tensor.</summary>
    public float this[int i, int j, int k]
    {
        get => this[((long)i * _shape[1] + j) * _shape[2] + k];
        set => this[((long)i * _shape[1] + j) * _shape[2] + k] = value;
    }

    /// <summary>Sets every element to zero.</summary>
    public void Zero() => NativeMemory.Clear(Data, (nuint)_length * sizeof(float));

    /// <summary>Copies the elements of <paramref name="source"/>, which must have the same number of elements.</summary>
    public void CopyFrom(Tensor source)
    {
        if (source.Length != Length) throw new ArgumentException($"Cannot copy {source.Length} elements into a tensor of {Length}.");
        Buffer.MemoryCopy(source.Data, Data, _length * sizeof(float), _length * sizeof(float));
    }

    /// <summary>A managed copy of the elements.</summary>
    public float[] ToArray() => Span.ToArray();

    /// <summary>True when both tensors have the same shape.</summary>
    public bool SameShape(Tensor other) => _shape.AsSpan().SequenceEqual(other._shape);

    /// <summary>Shape as PyTorch prints it, e.g. <c>[2, 256, 50257]</c>.</summary>
    public string ShapeString => "[" + string.Join(", ", _shape) + "]";

    public override string ToString() => $"Tensor{ShapeString}";

    public bool IsDisposed => _data == null;

    public void Dispose()
    {
        if (_data == null) return;
        if (!_ownsMemory)
        {
            _data = null;
            GC.SuppressFinalize(this);
            return;
        }
        NativeMemory.Free(_allocation);
        GC.RemoveMemoryPressure(Math.Max(1, _length) * sizeof(float));
        _data = null;
        _allocation = null;
        GC.SuppressFinalize(this);
    }

    ~Tensor()
    {
        if (_allocation != null) NativeMemory.Free(_allocation);
    }

    private static void ThrowDisposed() => throw new ObjectDisposedException(nameof(Tensor));
}

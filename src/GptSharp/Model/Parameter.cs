using GptSharp.Tensors;

namespace GptSharp.Model;

/// <summary>
/// A trainable tensor with its book name (<c>trf_blocks.0.att.W_query.weight</c>) and its gradient: a view (name,
/// shape, offset) into the weights and gradients of a <see cref="ParameterArena"/>, the model's one allocation each.
/// </summary>
public sealed class Parameter : IDisposable
{
    private readonly int[] _shape;
    private Tensor _value, _grad;
    private bool _disposed;

    /// <summary>A parameter of its own (zero weights and gradient), outside any model.</summary>
    public Parameter(string name, params int[] shape) : this(name, shape, standalone: true) { }

    /// <summary>A parameter without memory yet: the model declares all of its parameters, then packs them into one arena.</summary>
    internal Parameter(string name, int[] shape, bool standalone)
    {
        Name = name;
        _shape = (int[])shape.Clone();
        long length = 1;
        foreach (int d in _shape)
        {
            if (d < 0) throw new ArgumentException($"{name}: dimensions must be non-negative, got [{string.Join(", ", shape)}].");
            length *= d;
        }
        Length = length;
        // Placeholders that report the shape and refuse their data until the parameter has a place.
        _value = Unplaced();
        _grad = Unplaced();
        if (standalone) _ = new ParameterArena([this]);
    }

    /// <summary>The name in the book's PyTorch <c>state_dict</c>.</summary>
    public string Name { get; }

    /// <summary>The weights.</summary>
    public Tensor Value => _value;

    /// <summary>d loss / d weights, accumulated by backward passes until <c>ZeroGrad</c>.</summary>
    public Tensor Grad => _grad;

    public long Length { get; }

    /// <summary>The arena holding the float32 weights and gradient; null once disposed or quantized.</summary>
    internal ParameterArena? Arena { get; private set; }

    /// <summary>Where the weights start in <see cref="ParameterArena.Weights"/> (and the gradient in its <see cref="ParameterArena.Grads"/>).</summary>
    internal long Offset { get; private set; }

    /// <summary>
    /// The weight as int8 with block scales once the model is quantized (<see cref="GptModel.QuantizeInt8"/>; linear
    /// weights only). The float32 <see cref="Value"/> and <see cref="Grad"/> are then gone: the model is inference-only.
    /// </summary>
    internal Int8Matrix? Int8 { get; private set; }

    /// <summary>Becomes the view at <paramref name="offset"/> of <paramref name="arena"/>, taking its current values along.</summary>
    internal unsafe void MoveTo(ParameterArena arena, long offset)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (Int8 != null) throw new InvalidOperationException($"{Name} is int8: it has no float32 weights to place.");
        var value = Tensor.View(arena.Weights.Data + offset, _shape);
        var grad = Tensor.View(arena.Grads.Data + offset, _shape);
        if (Arena != null)
        {
            value.CopyFrom(_value);
            grad.CopyFrom(_grad);
        }
        Leave();
        (_value, _grad, Arena, Offset) = (value, grad, arena, offset);
    }

    /// <summary>Leaves the arena (the last parameter to leave frees it); <see cref="Value"/> and <see cref="Grad"/> keep only their shape.</summary>
    private void Leave()
    {
        _value.Dispose();
        _grad.Dispose();
        Arena?.Detach(this, Offset);
        Arena = null;
    }

    private unsafe Tensor Unplaced() => Tensor.View(null, _shape);

    /// <summary>Replaces the float32 weights by <paramref name="quantized"/> and leaves the arena (weights and gradient).</summary>
    internal void UseInt8(Int8Matrix quantized)
    {
        if (quantized.Rows != Value.Size(0) || quantized.Columns != Value.Size(1))
            throw new ArgumentException($"{Name}: int8 weights [{quantized.Rows}, {quantized.Columns}] do not match the parameter's shape {Value.ShapeString}.");
        Int8?.Dispose();
        Int8 = quantized;
        Leave();
    }

    /// <summary>Quantizes the float32 weights to int8 (see <see cref="Int8Matrix"/>) and frees them; nothing if already done.</summary>
    internal unsafe void QuantizeInt8()
    {
        if (Int8 != null) return;
        Int8Matrix quantized;
        try
        {
            quantized = Int8Matrix.Quantize(Value.Data, Value.Size(0), Value.Size(1));
        }
        catch (ArgumentException e)
        {
            throw new ArgumentException($"{Name}: {e.Message}", e);
        }
        UseInt8(quantized);
    }

    public override string ToString() => $"{Name} {Value.ShapeString}{(Int8 != null ? " int8" : "")}";

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Leave();
        Int8?.Dispose();
    }
}

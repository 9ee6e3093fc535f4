using GptSharp.Tensors;

namespace GptSharp.Model;

/// <summary>A trainable tensor with its book name (<c>trf_blocks.0.att.W_query.weight</c>) and its gradient.</summary>
public sealed class Parameter : IDisposable
{
    public Parameter(string name, params int[] shape)
    {
        Name = name;
        Value = new Tensor(shape);
        Grad = new Tensor(shape);
    }

    /// <summary>The name in the book's PyTorch <c>state_dict</c>.</summary>
    public string Name { get; }

    /// <summary>The weights.</summary>
    public Tensor Value { get; }

    /// <summary>d loss / d weights, accumulated by backward passes until <c>ZeroGrad</c>.</summary>
    public Tensor Grad { get; }

    public long Length => Value.Length;

    /// <summary>
    /// The weight as int8 with block scales once the model is quantized (<see cref="GptModel.QuantizeInt8"/>; linear
    /// weights only). The float32 <see cref="Value"/> and <see cref="Grad"/> are then freed: the model is inference-only.
    /// </summary>
    public Int8Matrix? Int8 { get; private set; }

    /// <summary>Replaces the float32 weights by <paramref name="quantized"/> and frees them (and the gradient).</summary>
    internal void UseInt8(Int8Matrix quantized)
    {
        if (quantized.Rows != Value.Size(0) || quantized.Columns != Value.Size(1))
            throw new ArgumentException($"{Name}: int8 weights [{quantized.Rows}, {quantized.Columns}] do not match the parameter's shape {Value.ShapeString}.");
        Int8?.Dispose();
        Int8 = quantized;
        Value.Dispose();
        Grad.Dispose();
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
        Value.Dispose();
        Grad.Dispose();
        Int8?.Dispose();
    }
}

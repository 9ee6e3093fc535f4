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

    public override string ToString() => $"{Name} {Value.ShapeString}";

    public void Dispose()
    {
        Value.Dispose();
        Grad.Dispose();
    }
}

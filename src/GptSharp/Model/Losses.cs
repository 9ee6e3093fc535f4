using GptSharp.Tensors;

namespace GptSharp.Model;

/// <summary>A scalar loss that can be differentiated back into the model that produced its input.</summary>
public sealed class Loss
{
    // PLACEHOLDER: the engine/model issue fills this in.
    public float Value { get; init; }

    /// <summary>Back-propagates into the parameters' <c>Grad</c> (accumulating, like PyTorch).</summary>
    public void Backward() => throw new NotImplementedException();

    public override string ToString() => Value.ToString("F5");
}

/// <summary>Loss functions (PyTorch's <c>torch.nn.functional</c> equivalents).</summary>
public static class Losses
{
    /// <summary>
    /// Mean cross-entropy of <paramref name="logits"/> [batch, seq, vocab] against <paramref name="targets"/> [batch, seq],
    /// the book's <c>F.cross_entropy(logits.flatten(0, 1), targets.flatten())</c>. Targets equal to
    /// <paramref name="ignoreIndex"/> are left out of the mean, as in PyTorch.
    /// </summary>
    public static Loss CrossEntropy(Tensor logits, TokenBatch targets, int ignoreIndex = -100) => throw new NotImplementedException();
}

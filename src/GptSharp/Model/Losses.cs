using System.Buffers;
using GptSharp.Tensors;
using GptSharp.Layers;
using GptSharp.Data;

namespace GptSharp.Model;

/// <summary>
/// A scalar loss that can be differentiated back into the model that produced its input (PyTorch's
/// 0-dim loss tensor). A struct, so computing a loss in a training step allocates nothing.
/// </summary>
public readonly struct Loss
{
    private readonly Tensor? _logits;
    private readonly long _logitsVersion;

    internal Loss(float value, Tensor? logits)
    {
        Value = value;
        _logits = logits;
        _logitsVersion = logits?.Version ?? 0;
    }

    /// <summary>The loss (the book's <c>loss.item()</c>).</summary>
    public float Value { get; }

    /// <summary>
    /// Back-propagates into the parameters' <c>Grad</c> (accumulating, like PyTorch): d loss / d logits was
    /// computed with the loss, and the model that produced the logits carries it back through its layers.
    /// </summary>
    public void Backward()
    {
        var backward = _logits?.BackwardFunction ?? throw new InvalidOperationException(
            "This loss cannot be back-propagated: its logits were computed under NoGrad() (inference mode), which keeps no activations, or by nothing differentiable.");
        if (_logits!.Version != _logitsVersion)
            throw new InvalidOperationException(
                "This loss's logits were overwritten by a later Forward, which replaced the activations it needs: call Backward before the next Forward (to accumulate gradients: forward, backward, forward, backward, then step).");
        backward(_logits.Grad!);
    }

    public override string ToString() => Value.ToString("F5");
}

/// <summary>Loss functions (PyTorch's <c>torch.nn.functional</c> equivalents).</summary>
public static class Losses
{
    /// <summary>
    /// Mean cross-entropy of <paramref name="logits"/> [batch, seq, vocab] against <paramref name="targets"/> [batch, seq],
    /// the book's <c>F.cross_entropy(logits.flatten(0, 1), targets.flatten())</c>. Targets equal to
    /// <paramref name="ignoreIndex"/> are left out of the mean, as in PyTorch. When the logits can be
    /// back-propagated, d loss / d logits is computed in the same pass (softmax − one-hot, over the count).
    /// </summary>
    public static unsafe Loss CrossEntropy(Tensor logits, TokenBatch targets, int ignoreIndex = -100)
    {
        if (logits.Rank != 3 || logits.Size(0) != targets.BatchSize || logits.Size(1) != targets.SequenceLength)
            throw new ArgumentException($"Logits {logits.ShapeString} do not match targets [{targets.BatchSize}, {targets.SequenceLength}]: expected [batch, seq, vocab].");
        int rows = targets.Count, vocab = logits.Size(2);
        foreach (int t in targets.Ids)
            if (t != ignoreIndex && (uint)t >= (uint)vocab)
                throw new ArgumentException($"Target id {t} is outside the vocabulary (0..{vocab - 1}) and is not the ignore index {ignoreIndex}.");

        bool differentiable = logits.BackwardFunction != null;
        if (differentiable && (logits.Grad == null || logits.Grad.Length != logits.Length))
            logits.Grad = new Tensor(logits.ShapeArray);
        float* dLogits = differentiable ? logits.Grad!.Data : null;
        float value;
        fixed (int* ids = targets.Ids)
        {
            // Per-row losses: a stack buffer for typical batches, a pooled array beyond.
            if (rows <= 4096)
            {
                float* rowLosses = stackalloc float[rows];
                value = Kernels.SoftmaxCrossEntropyForward(dLogits, rowLosses, logits.Data, ids, rows, vocab, ignoreIndex);
            }
            else
            {
                float[] rented = ArrayPool<float>.Shared.Rent(rows);
                fixed (float* rowLosses = rented)
                    value = Kernels.SoftmaxCrossEntropyForward(dLogits, rowLosses, logits.Data, ids, rows, vocab, ignoreIndex);
                ArrayPool<float>.Shared.Return(rented);
            }
        }
        return new Loss(value, differentiable ? logits : null);
    }
}

using GptSharp.Tensors;

namespace GptSharp.Model;

// PLACEHOLDER: the engine/model issue replaces this file with the real forward and backward passes.
public sealed partial class GptModel
{
    private bool _noGrad;

    /// <summary>True in training mode (dropout active), false in eval mode.</summary>
    public bool IsTraining { get; private set; } = true;

    /// <summary>Training mode: dropout is applied (the book's <c>model.train()</c>).</summary>
    public void Train() => IsTraining = true;

    /// <summary>Evaluation mode: dropout is the identity (the book's <c>model.eval()</c>).</summary>
    public void Eval() => IsTraining = false;

    /// <summary>
    /// Inference mode, like <c>with torch.no_grad():</c>: while the returned scope is alive,
    /// <see cref="Forward"/> keeps no activations for a backward pass.
    /// </summary>
    public IDisposable NoGrad()
    {
        bool previous = _noGrad;
        _noGrad = true;
        return new Scope(() => _noGrad = previous);
    }

    /// <summary>
    /// Logits [batch, seq, vocab] for <paramref name="inputIds"/> [batch, seq] (seq ≤ context length).
    /// The tensor is owned by the model and overwritten by the next call.
    /// </summary>
    public Tensor Forward(TokenBatch inputIds) => throw new NotImplementedException();

    private void InitializeActivations() { }

    private void DisposeActivations() { }

    private sealed class Scope(Action onDispose) : IDisposable
    {
        public void Dispose() => onDispose();
    }
}

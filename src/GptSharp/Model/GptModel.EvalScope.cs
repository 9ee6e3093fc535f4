namespace GptSharp.Model;

public sealed partial class GptModel
{
    /// <summary>
    /// Eval mode under <see cref="NoGrad"/> until the returned scope is disposed (the book's <c>model.eval()</c> with
    /// <c>torch.no_grad():</c>), then the mode and gradient setting the caller had: decoding or scoring inside a
    /// training run leaves the run as it found it. A struct, so the per-token uncached forward allocates nothing.
    /// </summary>
    internal EvalScope EvalNoGrad() => new(this);

    /// <summary>What <see cref="EvalNoGrad"/> switched, to switch it back.</summary>
    internal readonly struct EvalScope : IDisposable
    {
        private readonly GptModel _model;
        private readonly bool _wasTraining, _wasNoGrad;

        public EvalScope(GptModel model)
        {
            _model = model;
            _wasTraining = model.IsTraining;
            _wasNoGrad = model._noGrad;
            model.IsTraining = false;
            model._noGrad = true;
        }

        public void Dispose()
        {
            _model.IsTraining = _wasTraining;
            _model._noGrad = _wasNoGrad;
        }
    }
}

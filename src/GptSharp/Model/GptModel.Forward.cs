using System.Globalization;
using GptSharp.Tensors;

namespace GptSharp.Model;

/// <summary>The forward pass: the book's <c>GPTModel.forward</c>, llm.c style over preallocated buffers.</summary>
public sealed unsafe partial class GptModel
{
    private bool _noGrad;
    private GptActivations? _trainingActivations;
    private GptActivations? _inferenceActivations;
    // Shape and buffers of the last forward pass that kept its activations (what backward reads).
    private GptActivations? _pending;
    private int[]? _pendingIds;
    private int _pendingBatch, _pendingSeq;
    private bool _pendingDropout;
    private Action<Tensor>? _backwardFunction;
    private double _dropRate;

    /// <summary>True in training mode (dropout active), false in eval mode.</summary>
    public bool IsTraining { get; private set; } = true;

    /// <summary>True inside a <see cref="NoGrad"/> scope.</summary>
    public bool IsNoGrad => _noGrad;

    /// <summary>Training mode: dropout is applied (the book's <c>model.train()</c>).</summary>
    public void Train() => IsTraining = true;

    /// <summary>Evaluation mode: dropout is the identity (the book's <c>model.eval()</c>).</summary>
    public void Eval() => IsTraining = false;

    /// <summary>
    /// Inference mode, like <c>with torch.no_grad():</c>: while the returned scope is alive,
    /// <see cref="Forward"/> keeps no activations for a backward pass (it uses a lean buffer set
    /// that shares one copy of each activation across blocks).
    /// </summary>
    public IDisposable NoGrad()
    {
        bool previous = _noGrad;
        _noGrad = true;
        return new Scope(() => _noGrad = previous);
    }

    /// <summary>Bytes of activation buffers currently allocated (training and inference sets).</summary>
    public long ActivationBytes => (_trainingActivations?.TotalBytes ?? 0) + (_inferenceActivations?.TotalBytes ?? 0);

    /// <summary>
    /// Logits [batch, seq, vocab] for <paramref name="inputIds"/> [batch, seq] (seq ≤ context length).
    /// The tensor is owned by the model and overwritten by the next call. Outside <see cref="NoGrad"/>,
    /// <c>Losses.CrossEntropy(logits, targets).Backward()</c> back-propagates into every <see cref="Parameter.Grad"/>.
    /// </summary>
    public Tensor Forward(TokenBatch inputIds)
    {
        int batch = inputIds.BatchSize, seq = inputIds.SequenceLength;
        if (seq > Config.ContextLength)
            throw new ArgumentException($"The input has {seq} tokens per row but the model's context length is {Config.ContextLength}.");
        int vocab = Config.VocabSize;
        foreach (int id in inputIds.Ids)
            if ((uint)id >= (uint)vocab)
                throw new ArgumentException($"Token id {id} is outside the model's vocabulary (0..{vocab - 1}).");

        bool keep = !_noGrad;
        // Keeping activations is for a backward pass, which needs float32 weights and gradients.
        if (keep && IsQuantized) throw new InvalidOperationException(QuantizedTrainingMessage + " (Use NoGrad() for inference.)");
        var acts = keep
            ? _trainingActivations = Ensure(_trainingActivations, batch, seq, true)
            : _inferenceActivations = Ensure(_inferenceActivations, batch, seq, false);
        bool dropout = IsTraining && Config.DropRate > 0;
        fixed (int* ids = inputIds.Ids) RunForward(acts, ids, batch, seq, dropout);

        var logits = acts.LogitsView;
        if (logits == null || logits.Size(0) != batch || logits.Size(1) != seq)
        {
            logits?.Dispose();
            acts.DLogitsView?.Dispose();
            logits = acts.LogitsView = Tensor.View(acts.LogitsStorage.Data, batch, seq, vocab);
            if (keep) acts.DLogitsView = Tensor.View(acts.DLogits!.Data, batch, seq, vocab);
        }
        logits.Version++;
        if (keep)
        {
            _pending = acts;
            _pendingIds = inputIds.Ids;
            _pendingBatch = batch;
            _pendingSeq = seq;
            _pendingDropout = dropout;
            logits.Grad = acts.DLogitsView;
            logits.BackwardFunction = _backwardFunction ??= Backward;
        }
        else
        {
            // A forward in inference mode invalidates nothing kept by an earlier training forward.
            logits.Grad = null;
            logits.BackwardFunction = null;
        }
        return logits;
    }

    private GptActivations Ensure(GptActivations? current, int batch, int seq, bool forTraining)
    {
        if (current != null && current.Fits(batch, seq)) return current;
        int batchCapacity = Math.Max(batch, current?.BatchCapacity ?? 0);
        int seqCapacity = Math.Max(seq, current?.SeqCapacity ?? 0);
        // Inference windows grow one token at a time (the book's uncached generation loop): double the
        // capacity, up to the context length, so the buffers are rebuilt a handful of times, not per token.
        if (!forTraining && current != null && seq > current.SeqCapacity)
            seqCapacity = Math.Max(seq, Math.Min(Config.ContextLength, 2 * current.SeqCapacity));
        if (current != null)
        {
            if (ReferenceEquals(_pending, current)) _pending = null;
            current.Dispose();
        }
        return new GptActivations(Config, batchCapacity, seqCapacity, forTraining);
    }

    /// <summary>p as the double the book's Python config holds: 0.1, not (double)0.1f = 0.10000000149.</summary>
    private double DropRateAsDouble
    {
        get
        {
            if (_dropRate == 0 && Config.DropRate > 0)
                _dropRate = double.Parse(Config.DropRate.ToString("R", CultureInfo.InvariantCulture), CultureInfo.InvariantCulture);
            return _dropRate;
        }
    }

    private void RunForward(GptActivations a, int* ids, int batch, int seq, bool dropout)
    {
        int c = Config.EmbeddingDim, hidden = Config.HiddenDim, heads = Config.Heads, vocab = Config.VocabSize;
        int rows = batch * seq;
        long n = (long)rows * c;
        int headRows = batch * heads * seq;
        double p = DropRateAsDouble;
        float dropScale = dropout ? Kernels.DropoutScale(p) : 0f;
        var rng = DropoutGenerator;

        // x = drop_emb(tok_emb(in_idx) + pos_emb(arange(seq_len)))
        float* x = a.Residual[0].Data;
        Kernels.EmbeddingForward(x, ids, TokenEmbedding.Value.Data, PositionEmbedding.Value.Data, batch, seq, c);
        if (dropout)
        {
            Kernels.DropoutMask(a.EmbeddingMask!.Data, n, p, rng);
            Kernels.DropoutForward(x, x, a.EmbeddingMask.Data, n);
        }

        for (int l = 0; l < Blocks.Length; l++)
        {
            var block = Blocks[l];
            float* input = a.Residual[l].Data;
            float* ln1 = a.Ln1[l].Data, q = a.Query[l].Data, k = a.Key[l].Data, v = a.Value[l].Data;
            float* ctx = a.Context[l].Data, proj = a.Projection.Data, residual2 = a.Residual2[l].Data;

            // shortcut = x; x = norm1(x); x = att(x); x = drop_shortcut(x); x = x + shortcut
            Kernels.LayerNormForward(ln1, a.Ln1Mean[l].Data, a.Ln1Rstd[l].Data, input,
                block.Norm1.Scale.Value.Data, block.Norm1.Shift.Value.Data, rows, c);
            Linear(q, ln1, block.Query, rows, c, c);
            Linear(k, ln1, block.Key, rows, c, c);
            Linear(v, ln1, block.Value, rows, c, c);
            uint* attMask = null;
            if (dropout)
            {
                // One bernoulli_ over the whole [batch, heads, seq, seq] weights tensor, in its memory order, kept as bits.
                attMask = (uint*)a.AttentionMask![l].Data;
                Kernels.DropoutMaskBits(attMask, headRows, seq, p, rng);
            }
            float* rowStats = a.AttentionRowStats != null ? a.AttentionRowStats[l].Data : null;
            Kernels.AttentionForward(ctx, rowStats, attMask, dropScale, q, k, v, batch, seq, c, heads);
            Linear(proj, ctx, block.OutProj, rows, c, c);
            if (dropout)
            {
                float* mask = a.AttentionShortcutMask![l].Data;
                Kernels.DropoutMask(mask, n, p, rng);
                Kernels.DropoutForward(proj, proj, mask, n);
            }
            Kernels.ResidualForward(residual2, input, proj, n);

            // shortcut = x; x = norm2(x); x = ff(x); x = drop_shortcut(x); x = x + shortcut
            float* ln2 = a.Ln2[l].Data, fcHidden = a.FeedForwardHidden[l].Data, fcGelu = a.FeedForwardGelu.Data;
            Kernels.LayerNormForward(ln2, a.Ln2Mean[l].Data, a.Ln2Rstd[l].Data, residual2,
                block.Norm2.Scale.Value.Data, block.Norm2.Shift.Value.Data, rows, c);
            Linear(fcHidden, ln2, block.FeedForwardIn, rows, c, hidden);
            Kernels.GeluForward(fcGelu, fcHidden, (long)rows * hidden);
            Linear(proj, fcGelu, block.FeedForwardOut, rows, hidden, c);
            if (dropout)
            {
                float* mask = a.FeedForwardShortcutMask![l].Data;
                Kernels.DropoutMask(mask, n, p, rng);
                Kernels.DropoutForward(proj, proj, mask, n);
            }
            Kernels.ResidualForward(a.Residual[l + 1].Data, residual2, proj, n);
        }

        // x = final_norm(x); logits = out_head(x)
        Kernels.LayerNormForward(a.FinalNorm.Data, a.FinalNormMean.Data, a.FinalNormRstd.Data, a.Residual[Blocks.Length].Data,
            FinalNorm.Scale.Value.Data, FinalNorm.Shift.Value.Data, rows, c);
        Linear(a.LogitsStorage.Data, a.FinalNorm.Data, OutHead, null, rows, c, vocab);
    }

    /// <summary>
    /// The hidden state [batch, seq, emb] after the embeddings (<paramref name="index"/> 0), after block
    /// <paramref name="index"/> − 1 (1..layers), or after the final norm (layers + 1), from the last forward pass.
    /// For tests and inspection; in inference mode only the final states are kept.
    /// </summary>
    public float[] HiddenState(int index)
    {
        var a = _noGrad ? _inferenceActivations : _trainingActivations;
        if (a == null) throw new InvalidOperationException("HiddenState needs a forward pass first.");
        int rows = _noGrad ? a.LogitsView!.Size(0) * a.LogitsView.Size(1) : _pendingBatch * _pendingSeq;
        int c = Config.EmbeddingDim;
        if (_noGrad && index != Blocks.Length + 1)
            throw new InvalidOperationException("Under NoGrad() only the final norm's output is kept.");
        var source = index <= Blocks.Length ? a.Residual[index] : a.FinalNorm;
        return source.Span[..(rows * c)].ToArray();
    }

    private void DisposeActivations()
    {
        _trainingActivations?.Dispose();
        _inferenceActivations?.Dispose();
        _trainingActivations = _inferenceActivations = _pending = null;
    }

    private sealed class Scope(Action onDispose) : IDisposable
    {
        public void Dispose() => onDispose();
    }
}

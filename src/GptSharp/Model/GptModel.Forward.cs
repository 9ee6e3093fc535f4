using System.Globalization;
using GptSharp.Tensors;
using GptSharp.Layers;
using GptSharp.Data;
using GptSharp.Randomness;

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
    private Action<Tensor>? _backwardFunction, _lossBackwardFunction;
    // The handle a loss pass's Loss back-propagates through, and which rows of the head wait in the chunk buffer.
    private Tensor? _lossHandle;
    private (int Start, int Rows) _pendingHeadChunk;
    private int _lastRows;
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
        var acts = RunForwardPass(inputIds, headChunk: false);
        int batch = inputIds.BatchSize, seq = inputIds.SequenceLength, vocab = Config.VocabSize;
        bool keep = acts.ForTraining;
        var logits = acts.LogitsView;
        if (logits == null || logits.Size(0) != batch || logits.Size(1) != seq)
        {
            logits?.Dispose();
            acts.DLogitsView?.Dispose();
            logits = acts.LogitsView = Tensor.View(acts.LogitsStorage.Data, batch, seq, vocab);
            if (keep) acts.DLogitsView = Tensor.View(acts.DLogits.Data, batch, seq, vocab);
        }
        logits.Version++;
        if (keep)
        {
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

    /// <summary>
    /// Rows of the output head computed at a time by <see cref="ForwardLoss"/>: 512 × 50,257 logits are 103 MB, whatever
    /// the batch and context. 512 is also the GEMM's deepest k slice, so the head's gradient summed chunk by chunk adds
    /// in the order one GEMM over all rows would (and the book's 2 × 256 rows are one chunk).
    /// </summary>
    internal int HeadChunkRows { get; set; } = MemoryBudget.HeadChunkRows;

    /// <summary>
    /// The book's <c>F.cross_entropy(model(inputs).flatten(0, 1), targets.flatten())</c> without the logits ever
    /// existing whole: the output head, the softmax, the loss and d loss / d logits run over chunks of
    /// <see cref="HeadChunkRows"/> rows. Outside <see cref="NoGrad"/> each chunk's d loss / d (final norm) and share of
    /// the head's gradient are computed on the spot (the last chunk's wait in the chunk buffer), and
    /// <see cref="Loss.Backward"/> adds them to the parameters' gradients and goes on through the blocks — the same
    /// loss and gradients as <see cref="Forward"/> followed by <see cref="Losses.CrossEntropy"/>.
    /// </summary>
    internal Loss ForwardLoss(TokenBatch inputIds, TokenBatch targets, int ignoreIndex = -100)
    {
        if (targets.BatchSize != inputIds.BatchSize || targets.SequenceLength != inputIds.SequenceLength)
            throw new ArgumentException($"Targets [{targets.BatchSize}, {targets.SequenceLength}] do not match inputs [{inputIds.BatchSize}, {inputIds.SequenceLength}].");
        int vocab = Config.VocabSize, c = Config.EmbeddingDim;
        foreach (int t in targets.Ids)
            if (t != ignoreIndex && (uint)t >= (uint)vocab)
                throw new ArgumentException($"Target id {t} is outside the vocabulary (0..{vocab - 1}) and is not the ignore index {ignoreIndex}.");
        var acts = RunForwardPass(inputIds, headChunk: true);
        bool keep = acts.ForTraining;
        int rows = targets.Count, chunk = Math.Max(1, Math.Min(HeadChunkRows, rows));
        float* buffer = acts.HeadChunk(chunk).Data, rowLosses = acts.RowLosses.Data, x = acts.FinalNorm.Data;
        float value;
        int lastStart = 0;
        fixed (int* ids = targets.Ids)
        {
            int count = Kernels.CountTargets(ids, rows, ignoreIndex);
            float gradScale = count > 0 ? 1f / count : 0f;
            for (int r0 = 0; r0 < rows; r0 += chunk)
            {
                int m = Math.Min(chunk, rows - r0);
                lastStart = r0;
                Linear(buffer, x + (long)r0 * c, OutHead, null, m, c, vocab);
                Kernels.SoftmaxCrossEntropyRows(keep ? buffer : null, rowLosses + r0, buffer, ids + r0, m, vocab, ignoreIndex, gradScale);
                if (keep && r0 + m < rows)
                {
                    // Not the last chunk: its d(final norm) rows now, its head gradient into the running sum.
                    Gemm.MatMul(false, false, m, c, vocab, buffer, vocab, OutHead.Value.Data, c, acts.DLn!.Data + (long)r0 * c, c);
                    Gemm.MatMul(true, false, vocab, c, m, buffer, vocab, x + (long)r0 * c, c, acts.HeadGradientSum.Data, c, accumulate: r0 > 0);
                }
            }
            value = Kernels.MeanRowLoss(rowLosses, ids, rows, ignoreIndex, count);
        }
        var handle = _lossHandle ??= new Tensor(1);
        handle.Version++;
        if (!keep) return new Loss(value, null);
        _pendingHeadChunk = (lastStart, rows - lastStart);
        handle.Grad = handle;
        handle.BackwardFunction = _lossBackwardFunction ??= BackwardFromLoss;
        return new Loss(value, handle);
    }

    /// <summary>
    /// The shared part of <see cref="Forward"/> and <see cref="ForwardLoss"/>: checks, the activation set, the blocks and
    /// the final norm (and the whole output head unless <paramref name="headChunk"/>); records what backward needs.
    /// </summary>
    private GptActivations RunForwardPass(TokenBatch inputIds, bool headChunk)
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
        fixed (int* ids = inputIds.Ids) RunForward(acts, ids, batch, seq, dropout, logits: !headChunk);
        _lastRows = batch * seq;
        if (keep)
        {
            // Any earlier loss or logits of a training pass can no longer be back-propagated.
            if (_lossHandle != null) _lossHandle.Version++;
            if (acts.LogitsView != null) acts.LogitsView.Version++;
            _pending = acts;
            _pendingIds = inputIds.Ids;
            _pendingBatch = batch;
            _pendingSeq = seq;
            _pendingDropout = dropout;
        }
        return acts;
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

    private void RunForward(GptActivations a, int* ids, int batch, int seq, bool dropout, bool logits)
    {
        int c = Config.EmbeddingDim, heads = Config.Heads, vocab = Config.VocabSize;
        int rows = batch * seq;
        long n = (long)rows * c;
        double p = DropRateAsDouble;

        // x = drop_emb(tok_emb(in_idx) + pos_emb(arange(seq_len)))
        float* x = a.Residual[0].Data;
        Kernels.EmbeddingForward(x, ids, TokenEmbedding.Value.Data, PositionEmbedding.Value.Data, batch, seq, c);
        if (dropout)
        {
            Kernels.DropoutMask(a.EmbeddingMask!.Data, n, p, DropoutGenerator);
            Kernels.DropoutForward(x, x, a.EmbeddingMask.Data, n);
        }

        var attention = new WindowAttention
        {
            Activations = a, Batch = batch, Seq = seq, HeadRows = batch * heads * seq, Dropout = dropout, DropRate = p,
            DropScale = dropout ? Kernels.DropoutScale(p) : 0f, Generator = DropoutGenerator,
        };
        RunBlocks(a, rows, dropout, rowExact: false, ref attention);

        // x = final_norm(x); logits = out_head(x)
        Kernels.LayerNormForward(a.FinalNorm.Data, a.FinalNormMean.Data, a.FinalNormRstd.Data, a.Residual[Blocks.Length].Data,
            FinalNorm.Scale.Value.Data, FinalNorm.Shift.Value.Data, rows, c);
        if (logits) Linear(a.LogitsStorage.Data, a.FinalNorm.Data, OutHead, null, rows, c, vocab);
    }

    /// <summary>
    /// The transformer blocks over <paramref name="rows"/> positions, for every forward: the book's block (shortcut = x;
    /// x = norm1(x); x = att(x); x = drop_shortcut(x); x = x + shortcut; the same around norm2 and the feed forward), with
    /// only the attention step depending on the pass (<typeparamref name="TAttention"/>: the whole window, or new positions
    /// over KV caches). Block l reads <c>Residual[l]</c> and writes <c>Residual[l + 1]</c>; the inference set aliases
    /// them all to one buffer, so there the residual stream is updated in place. LayerNorm statistics are kept for backward only.
    /// </summary>
    private void RunBlocks<TAttention>(GptActivations a, int rows, bool dropout, bool rowExact, ref TAttention attention)
        where TAttention : struct, IBlockAttention
    {
        int c = Config.EmbeddingDim, hidden = Config.HiddenDim, heads = Config.Heads;
        long n = (long)rows * c;
        bool keep = a.ForTraining;
        double p = dropout ? DropRateAsDouble : 0;
        var rng = DropoutGenerator;
        for (int l = 0; l < Blocks.Length; l++)
        {
            var block = Blocks[l];
            float* input = a.Residual[l].Data;
            float* ln1 = a.Ln1[l].Data, q = a.Query[l].Data, k = a.Key[l].Data, v = a.Value[l].Data;
            float* ctx = a.Context[l].Data, proj = a.Projection.Data, residual2 = a.Residual2[l].Data;

            // shortcut = x; x = norm1(x); x = att(x); x = drop_shortcut(x); x = x + shortcut
            Kernels.LayerNormForward(ln1, keep ? a.Ln1Mean[l].Data : null, keep ? a.Ln1Rstd[l].Data : null, input,
                block.Norm1.Scale.Value.Data, block.Norm1.Shift.Value.Data, rows, c);
            LinearQkv(q, k, v, ln1, block, rows, c, rowExact);
            attention.Run(l, q, k, v, ctx, c, heads);
            Linear(proj, ctx, block.OutProj, rows, c, c, rowExact);
            if (dropout)
            {
                float* mask = a.AttentionShortcutMask![l].Data;
                Kernels.DropoutMask(mask, n, p, rng);
                Kernels.DropoutForward(proj, proj, mask, n);
            }
            Kernels.ResidualForward(residual2, input, proj, n);

            // shortcut = x; x = norm2(x); x = ff(x); x = drop_shortcut(x); x = x + shortcut
            float* ln2 = a.Ln2[l].Data, fcHidden = a.FeedForwardHidden[l].Data, fcGelu = a.FeedForwardGelu.Data;
            Kernels.LayerNormForward(ln2, keep ? a.Ln2Mean[l].Data : null, keep ? a.Ln2Rstd[l].Data : null, residual2,
                block.Norm2.Scale.Value.Data, block.Norm2.Shift.Value.Data, rows, c);
            Linear(fcHidden, ln2, block.FeedForwardIn, rows, c, hidden, rowExact);
            Kernels.GeluForward(fcGelu, fcHidden, (long)rows * hidden);
            Linear(proj, fcGelu, block.FeedForwardOut, rows, hidden, c, rowExact);
            if (dropout)
            {
                float* mask = a.FeedForwardShortcutMask![l].Data;
                Kernels.DropoutMask(mask, n, p, rng);
                Kernels.DropoutForward(proj, proj, mask, n);
            }
            Kernels.ResidualForward(a.Residual[l + 1].Data, residual2, proj, n);
        }
    }

    /// <summary>A block's attention step: q, k, v of the new positions in, the context out.</summary>
    private interface IBlockAttention
    {
        void Run(int layer, float* query, float* key, float* value, float* context, int embeddingDim, int heads);
    }

    /// <summary>
    /// The whole window attends causally to itself (<see cref="Forward"/>): with dropout, one bernoulli_ over the whole
    /// [batch, heads, seq, seq] weights tensor in its memory order, kept as bits; the row statistics backward needs.
    /// </summary>
    private struct WindowAttention : IBlockAttention
    {
        public GptActivations Activations;
        public IRandomGenerator Generator;
        public int Batch, Seq, HeadRows;
        public bool Dropout;
        public double DropRate;
        public float DropScale;

        public readonly void Run(int layer, float* q, float* k, float* v, float* ctx, int c, int heads)
        {
            uint* mask = null;
            if (Dropout)
            {
                mask = (uint*)Activations.AttentionMask![layer].Data;
                Kernels.DropoutMaskBits(mask, HeadRows, Seq, DropRate, Generator);
            }
            float* rowStats = Activations.AttentionRowStats != null ? Activations.AttentionRowStats[layer].Data : null;
            Kernels.AttentionForward(ctx, rowStats, mask, DropScale, q, k, v, Batch, Seq, c, heads);
        }
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
        int rows = _noGrad ? _lastRows : _pendingBatch * _pendingSeq;
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
        _lossHandle?.Dispose();
        _lossHandle = null;
    }

    private sealed class Scope(Action onDispose) : IDisposable
    {
        public void Dispose() => onDispose();
    }
}

using GptSharp.Tensors;
using GptSharp.Layers;

namespace GptSharp.Model;

/// <summary>
/// Every buffer one forward (and backward) pass of a <see cref="GptModel"/> needs, allocated once for a
/// capacity of (batch, seq) and reused by every later call that fits. A smaller batch uses the front of
/// each buffer in the same compact row-major layout.
/// Two flavours: the training set keeps one copy of each saved activation per block (what backward
/// reads), the inference set (<c>NoGrad</c>) aliases every block to one copy and has no gradient buffers.
/// </summary>
internal sealed class GptActivations : IDisposable
{
    private readonly List<Tensor> _owned = new();

    public GptActivations(GptConfig config, int batchCapacity, int seqCapacity, bool forTraining)
    {
        BatchCapacity = batchCapacity;
        SeqCapacity = seqCapacity;
        ForTraining = forTraining;
        int layers = config.Layers, c = config.EmbeddingDim, hidden = config.HiddenDim, v = config.VocabSize;
        int rows = batchCapacity * seqCapacity;
        int headRows = checked(batchCapacity * config.Heads * seqCapacity);
        // Dropout on the attention weights: one bit per weight (GPT-2's 1024 tokens: 1.5 MB per sequence and layer).
        long maskWords = checked((long)headRows * Kernels.DropoutBitWords(seqCapacity));
        bool dropout = config.DropRate > 0;
        int copies = forTraining ? layers : 1;

        // Residual[l] is the input of block l (Residual[0]: embeddings after dropout), Residual[layers] the last output.
        Residual = PerBlock(layers + 1, forTraining ? layers + 1 : 1, rows * c);
        Ln1 = PerBlock(layers, copies, rows * c);
        Ln1Mean = PerBlock(layers, copies, rows);
        Ln1Rstd = PerBlock(layers, copies, rows);
        Query = PerBlock(layers, copies, rows * c);
        Key = PerBlock(layers, copies, rows * c);
        Value = PerBlock(layers, copies, rows * c);
        // The fused attention keeps no [seq, seq] weights: backward recomputes them from each row's max and 1/sum.
        AttentionRowStats = forTraining ? PerBlock(layers, layers, 2L * headRows) : null;
        AttentionMask = dropout ? PerBlock(layers, copies, maskWords) : null;
        Context = PerBlock(layers, copies, rows * c);
        AttentionShortcutMask = dropout ? PerBlock(layers, copies, rows * c) : null;
        // Inference folds the block's residual stream in place: x += attn(...); x += ff(...).
        Residual2 = forTraining ? PerBlock(layers, layers, rows * c) : Enumerable.Repeat(Residual[0], layers).ToArray();
        Ln2 = PerBlock(layers, copies, rows * c);
        Ln2Mean = PerBlock(layers, copies, rows);
        Ln2Rstd = PerBlock(layers, copies, rows);
        FeedForwardHidden = PerBlock(layers, copies, rows * hidden);
        // One copy for all blocks: backward recomputes GELU(hidden) of the block it is in.
        FeedForwardGelu = New(rows * hidden);
        FeedForwardShortcutMask = dropout ? PerBlock(layers, copies, rows * c) : null;
        EmbeddingMask = dropout ? New(rows * c) : null;
        Projection = New(rows * c);
        FinalNorm = New(rows * c);
        FinalNormMean = New(rows);
        FinalNormRstd = New(rows);
        _rows = rows;
        _vocab = v;
        _channels = c;

        if (forTraining)
        {
            DResidual = New(rows * c);
            DLn = New(rows * c);
            DProjection = New(rows * c);
            DContext = New(rows * c);
            DQuery = New(rows * c);
            DKey = New(rows * c);
            DValue = New(rows * c);
            DHidden = New(rows * hidden);
            AttentionRowDots = New(headRows);
        }
    }

    public int BatchCapacity { get; }
    public int SeqCapacity { get; }
    public bool ForTraining { get; }

    public Tensor[] Residual, Ln1, Ln1Mean, Ln1Rstd, Query, Key, Value, Context, Residual2,
        Ln2, Ln2Mean, Ln2Rstd, FeedForwardHidden;
    /// <summary>Per block: the attention rows' softmax max and 1/sum [batch, heads, seq, 2] (training set only).</summary>
    public Tensor[]? AttentionRowStats;
    /// <summary>Per block: the attention dropout mask as bits (<see cref="Kernels.DropoutMaskBits"/>), stored in a float tensor's memory.</summary>
    public Tensor[]? AttentionMask;
    public Tensor[]? AttentionShortcutMask, FeedForwardShortcutMask;
    public Tensor? EmbeddingMask;
    public Tensor FeedForwardGelu;
    /// <summary>Output of out_proj or of the second FF layer before its shortcut dropout (not needed by backward).</summary>
    public Tensor Projection;
    public Tensor FinalNorm, FinalNormMean, FinalNormRstd;

    private readonly int _rows, _vocab, _channels;
    private Tensor? _logits, _dLogits, _headChunk, _headGradientSum, _rowLosses;

    /// <summary>Logits [rows, vocab] of every position, made on the first <c>Forward</c> that returns them (a loss pass does not).</summary>
    public Tensor LogitsStorage => _logits ??= New(checked((long)_rows * _vocab));

    /// <summary>Their gradient (training set), made with them.</summary>
    public Tensor DLogits => _dLogits ??= New(checked((long)_rows * _vocab));

    /// <summary>Logits, then their gradient, of one chunk of rows of a loss pass [chunkRows, vocab].</summary>
    public Tensor HeadChunk(int chunkRows)
    {
        if (_headChunk != null && _headChunk.Length >= (long)chunkRows * _vocab) return _headChunk;
        if (_headChunk != null) Release(_headChunk);
        return _headChunk = New(checked((long)chunkRows * _vocab));
    }

    /// <summary>The output head's gradient summed over the chunks of a loss pass before the last [vocab, emb].</summary>
    public Tensor HeadGradientSum => _headGradientSum ??= New(checked((long)_vocab * _channels));

    /// <summary>Per-row losses of a loss pass [rows].</summary>
    public Tensor RowLosses => _rowLosses ??= New(_rows);

    // Gradient scratch, shared by all blocks (training set only).
    public Tensor? DResidual, DLn, DProjection, DContext, DQuery, DKey, DValue, DHidden, AttentionRowDots;

    /// <summary>The logits of the last forward, as a [batch, seq, vocab] view; recreated only when the shape changes.</summary>
    public Tensor? LogitsView;
    public Tensor? DLogitsView;

    public bool Fits(int batch, int seq) => batch <= BatchCapacity && seq <= SeqCapacity;

    private void Release(Tensor t)
    {
        _owned.Remove(t);
        t.Dispose();
    }

    private Tensor New(long length)
    {
        var t = new Tensor(checked((int)length));
        _owned.Add(t);
        return t;
    }

    /// <summary><paramref name="count"/> slots backed by <paramref name="distinct"/> tensors (1: every slot shares one).</summary>
    private Tensor[] PerBlock(int count, int distinct, long length)
    {
        var slots = new Tensor[count];
        for (int i = 0; i < count; i++) slots[i] = i < distinct ? New(length) : slots[0];
        return slots;
    }

    public long TotalBytes => _owned.Sum(t => t.Length) * sizeof(float);

    public void Dispose()
    {
        LogitsView?.Dispose();
        DLogitsView?.Dispose();
        foreach (var t in _owned) t.Dispose();
    }
}

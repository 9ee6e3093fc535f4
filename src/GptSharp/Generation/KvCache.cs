using GptSharp.Model;
using GptSharp.Tensors;

namespace GptSharp.Generation;

/// <summary>
/// Inference with a key/value cache over a <see cref="GptModel"/>'s weights: <see cref="Prefill"/> runs the
/// prompt once and keeps every layer's keys and values; each <see cref="Step"/> then feeds one new token per
/// row, which costs one position of attention per layer against the cache instead of the book's full pass
/// over the whole window. The arithmetic is the book's GPTModel in eval mode (no dropout), computed for the
/// new positions only, so greedy ids equal the uncached loop's.
/// </summary>
/// <remarks>
/// Nothing is kept for a backward pass and nothing is allocated after construction: the cache, the
/// activations of one prefill and the logits are buffers sized once for <c>maxBatchSize × capacity</c>.
/// Logits come for the last position of each row only (the only ones decoding reads), so a prefill does
/// not pay the vocabulary-wide output head for every prompt position.
/// </remarks>
public sealed unsafe class KvCache : IDisposable
{
    private readonly GptModel _model;
    private readonly int _embeddingDim, _hiddenDim, _vocabSize, _heads, _headDim;

    // Per layer: keys and values of every cached position, [maxBatch, capacity, emb]; heads are column slices.
    private Tensor[] _keys, _values;
    private Tensor[] _spareKeys, _spareValues; // double buffers for ReorderRows
    // Activations of one call, [maxBatch * capacity, ...].
    private readonly Tensor _x, _normed, _query, _newKeys, _newValues, _attention, _hidden, _lastNormed, _logits;
    private readonly Tensor _scores; // [maxBatch * heads, capacity]
    private readonly MatVec _matVec = new();
    private readonly Action<int> _attentionTask;

    // The attention job of the current call, read by _attentionTask.
    private int _jobLayer, _jobRows, _jobStart;

    /// <param name="capacity">Most positions the cache holds (≤ the model's context length): the book's <c>context_size</c>.</param>
    public KvCache(GptModel model, int maxBatchSize, int capacity)
    {
        var config = model.Config;
        if (maxBatchSize < 1) throw new ArgumentException($"batch size must be at least 1, got {maxBatchSize}.");
        if (capacity < 1 || capacity > config.ContextLength)
            throw new ArgumentException($"context size must be between 1 and the model's context length ({config.ContextLength}), got {capacity}.");
        _model = model;
        MaxBatchSize = maxBatchSize;
        Capacity = capacity;
        _embeddingDim = config.EmbeddingDim;
        _hiddenDim = config.HiddenDim;
        _vocabSize = config.VocabSize;
        _heads = config.Heads;
        _headDim = config.HeadDim;

        int layers = config.Layers, rows = maxBatchSize * capacity, e = _embeddingDim;
        _keys = NewTensors(layers, maxBatchSize, capacity, e);
        _values = NewTensors(layers, maxBatchSize, capacity, e);
        _spareKeys = [];
        _spareValues = [];
        _x = new Tensor(rows, e);
        _normed = new Tensor(rows, e);
        _query = new Tensor(rows, e);
        _newKeys = new Tensor(rows, e);
        _newValues = new Tensor(rows, e);
        _attention = new Tensor(rows, e);
        _hidden = new Tensor(rows, _hiddenDim);
        _lastNormed = new Tensor(maxBatchSize, e);
        _logits = new Tensor(maxBatchSize, _vocabSize);
        _scores = new Tensor(maxBatchSize * _heads, capacity);
        _attentionTask = AttentionTask;
    }

    private static Tensor[] NewTensors(int count, params int[] shape)
    {
        var tensors = new Tensor[count];
        for (int i = 0; i < count; i++) tensors[i] = new Tensor(shape);
        return tensors;
    }

    public int MaxBatchSize { get; }

    /// <summary>Most positions the cache holds.</summary>
    public int Capacity { get; }

    /// <summary>Rows in the current sequence batch.</summary>
    public int BatchSize { get; private set; }

    /// <summary>Positions cached per row (the next token goes to this position).</summary>
    public int Length { get; private set; }

    /// <summary>True when no further <see cref="Step"/> fits: the caller has to slide the window (re-prefill).</summary>
    public bool IsFull => Length >= Capacity;

    /// <summary>Next-token logits of the last position of each row, [BatchSize, vocab], valid until the next call.</summary>
    public ReadOnlySpan<float> LogitsRow(int row)
    {
        if ((uint)row >= (uint)BatchSize) throw new ArgumentOutOfRangeException(nameof(row));
        return new ReadOnlySpan<float>(_logits.Data + (long)row * _vocabSize, _vocabSize);
    }

    /// <summary>
    /// Forgets the cache and runs <paramref name="ids"/> ([batchSize, sequenceLength], row-major) from position 0,
    /// filling the cache and the last-position logits.
    /// </summary>
    public void Prefill(ReadOnlySpan<int> ids, int batchSize, int sequenceLength)
    {
        if (batchSize < 1 || batchSize > MaxBatchSize)
            throw new ArgumentException($"batch size must be between 1 and {MaxBatchSize}, got {batchSize}.");
        if (sequenceLength < 1 || sequenceLength > Capacity)
            throw new ArgumentException($"a prefill holds 1 to {Capacity} tokens per row, got {sequenceLength}.");
        if (ids.Length != batchSize * sequenceLength)
            throw new ArgumentException($"{ids.Length} ids do not fill a batch of [{batchSize}, {sequenceLength}].");
        BatchSize = batchSize;
        Length = 0;
        Run(ids, sequenceLength);
    }

    /// <summary>Appends one token per row (<paramref name="nextIds"/>.Length = <see cref="BatchSize"/>) and computes its logits.</summary>
    public void Step(ReadOnlySpan<int> nextIds)
    {
        if (BatchSize == 0) throw new InvalidOperationException("Step needs a Prefill first.");
        if (nextIds.Length != BatchSize) throw new ArgumentException($"Step needs one id per row ({BatchSize}), got {nextIds.Length}.");
        if (IsFull) throw new InvalidOperationException($"The KV cache is full ({Capacity} positions): slide the window with a new Prefill.");
        Run(nextIds, 1);
    }

    /// <summary>
    /// Row r of the cache becomes old row <paramref name="sourceRows"/>[r] (beam search keeps the cache of the
    /// beams it continues). The logits are not moved.
    /// </summary>
    public void ReorderRows(ReadOnlySpan<int> sourceRows)
    {
        if (sourceRows.Length != BatchSize) throw new ArgumentException($"ReorderRows needs one source per row ({BatchSize}), got {sourceRows.Length}.");
        bool identity = true;
        for (int r = 0; r < sourceRows.Length; r++)
        {
            if ((uint)sourceRows[r] >= (uint)BatchSize) throw new ArgumentOutOfRangeException(nameof(sourceRows));
            identity &= sourceRows[r] == r;
        }
        if (identity) return;
        if (_spareKeys.Length == 0)
        {
            _spareKeys = NewTensors(_keys.Length, MaxBatchSize, Capacity, _embeddingDim);
            _spareValues = NewTensors(_keys.Length, MaxBatchSize, Capacity, _embeddingDim);
        }
        long rowFloats = (long)Capacity * _embeddingDim, bytes = (long)Length * _embeddingDim * sizeof(float);
        for (int l = 0; l < _keys.Length; l++)
        {
            for (int r = 0; r < sourceRows.Length; r++)
            {
                Buffer.MemoryCopy(_keys[l].Data + sourceRows[r] * rowFloats, _spareKeys[l].Data + r * rowFloats, bytes, bytes);
                Buffer.MemoryCopy(_values[l].Data + sourceRows[r] * rowFloats, _spareValues[l].Data + r * rowFloats, bytes, bytes);
            }
        }
        (_keys, _spareKeys) = (_spareKeys, _keys);
        (_values, _spareValues) = (_spareValues, _values);
    }

    /// <summary>The book's forward pass for <paramref name="count"/> new positions per row, starting at <see cref="Length"/>.</summary>
    private void Run(ReadOnlySpan<int> ids, int count)
    {
        int batch = BatchSize, start = Length, rows = batch * count, e = _embeddingDim;
        var config = _model.Config;
        float* x = _x.Data;

        // x = tok_emb[id] + pos_emb[position] (dropout is the identity in eval mode).
        float* tokenEmbedding = _model.TokenEmbedding.Value.Data, positionEmbedding = _model.PositionEmbedding.Value.Data;
        for (int r = 0; r < rows; r++)
        {
            int id = ids[r];
            if ((uint)id >= (uint)_vocabSize) throw new ArgumentException($"token id {id} is outside the vocabulary (0..{_vocabSize - 1}).");
            int position = start + r % count;
            InferenceKernels.Add(tokenEmbedding + (long)id * e, positionEmbedding + (long)position * e, x + (long)r * e, e);
        }

        for (int l = 0; l < config.Layers; l++)
        {
            var block = _model.Blocks[l];
            // Attention sub-block: x += out_proj(attention(norm1(x))).
            InferenceKernels.LayerNorm(x, _normed.Data, block.Norm1.Scale.Value.Data, block.Norm1.Shift.Value.Data, rows, e);
            Linear(_normed.Data, rows, block.Query, _query.Data, accumulate: false);
            Linear(_normed.Data, rows, block.Key, _newKeys.Data, accumulate: false);
            Linear(_normed.Data, rows, block.Value, _newValues.Data, accumulate: false);
            long rowBytes = (long)count * e * sizeof(float);
            for (int b = 0; b < batch; b++)
            {
                long cacheOffset = ((long)b * Capacity + start) * e;
                Buffer.MemoryCopy(_newKeys.Data + (long)b * count * e, _keys[l].Data + cacheOffset, rowBytes, rowBytes);
                Buffer.MemoryCopy(_newValues.Data + (long)b * count * e, _values[l].Data + cacheOffset, rowBytes, rowBytes);
            }
            _jobLayer = l; _jobRows = count; _jobStart = start;
            // Attention reads the cached keys and values once: worth the threads only when the cache is long.
            long attentionWork = (long)batch * count * (start + count) * e;
            if (attentionWork < 1 << 18)
                for (int task = 0; task < batch * _heads; task++) AttentionTask(task);
            else
                Workers.Run(batch * _heads, _attentionTask);
            Linear(_attention.Data, rows, block.OutProj, x, accumulate: true);

            // Feed-forward sub-block: x += W2·GELU(W1·norm2(x) + b1) + b2.
            InferenceKernels.LayerNorm(x, _normed.Data, block.Norm2.Scale.Value.Data, block.Norm2.Shift.Value.Data, rows, e);
            Linear(_normed.Data, rows, block.FeedForwardIn, _hidden.Data, accumulate: false);
            InferenceKernels.Gelu(_hidden.Data, (long)rows * _hiddenDim);
            Linear(_hidden.Data, rows, block.FeedForwardOut, x, accumulate: true);
        }

        // Final norm and output head, for the last position of each row only.
        for (int b = 0; b < batch; b++)
        {
            InferenceKernels.LayerNorm(x + ((long)b * count + count - 1) * e, _lastNormed.Data + (long)b * e,
                _model.FinalNorm.Scale.Value.Data, _model.FinalNorm.Shift.Value.Data, 1, e);
        }
        LinearRaw(_lastNormed.Data, batch, e, _model.OutHead.Value.Data, null, _logits.Data, _vocabSize, accumulate: false);
        Length = start + count;
    }

    private void Linear(float* input, int rows, LinearParameters linear, float* output, bool accumulate)
    {
        var weight = linear.Weight.Value;
        LinearRaw(input, rows, weight.Size(1), weight.Data, linear.Bias is null ? null : linear.Bias.Value.Data, output, weight.Size(0), accumulate);
    }

    /// <summary>output[rows, outF] (+)= input[rows, inF]·Wᵀ + bias: a matrix-vector product for one row, the GEMM otherwise.</summary>
    private void LinearRaw(float* input, int rows, int inFeatures, float* weight, float* bias, float* output, int outFeatures, bool accumulate)
    {
        if (rows == 1)
            _matVec.Multiply(input, weight, bias, output, inFeatures, outFeatures, accumulate);
        else
            Gemm.MatMul(false, true, rows, outFeatures, inFeatures, input, inFeatures, weight, inFeatures, output, outFeatures, accumulate, bias);
    }

    /// <summary>
    /// Causal attention of one (row, head): each new query at position p attends to cached positions 0..p,
    /// softmax(q·kᵀ / √head_dim)·V, written into that head's columns of _attention.
    /// </summary>
    private void AttentionTask(int task)
    {
        int b = task / _heads, h = task % _heads, e = _embeddingDim, d = _headDim;
        int count = _jobRows, start = _jobStart;
        float* keys = _keys[_jobLayer].Data + (long)b * Capacity * e + h * d;
        float* values = _values[_jobLayer].Data + (long)b * Capacity * e + h * d;
        float* scores = _scores.Data + (long)task * Capacity;
        float scale = MathF.Sqrt(d);
        for (int t = 0; t < count; t++)
        {
            long row = (long)b * count + t;
            InferenceKernels.AttendOneQuery(_query.Data + row * e + h * d, keys, values, e, start + t + 1, d, scale, scores,
                _attention.Data + row * e + h * d);
        }
    }

    public void Dispose()
    {
        foreach (var t in _keys) t.Dispose();
        foreach (var t in _values) t.Dispose();
        foreach (var t in _spareKeys) t.Dispose();
        foreach (var t in _spareValues) t.Dispose();
        _x.Dispose(); _normed.Dispose(); _query.Dispose(); _newKeys.Dispose(); _newValues.Dispose();
        _attention.Dispose(); _hidden.Dispose(); _lastNormed.Dispose(); _logits.Dispose(); _scores.Dispose();
    }
}

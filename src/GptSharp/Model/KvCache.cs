using GptSharp.Tensors;

namespace GptSharp.Model;

/// <summary>
/// The keys and values of every block for the tokens a <see cref="GptModel"/> has seen so far, so that
/// generating one more token costs one position's work instead of re-running the whole window:
/// <c>model.Prefill(cache, prompt)</c>, then <c>model.DecodeNext(cache, nextId)</c> per new token. Each returns
/// the last position's logits [batch, vocab] (owned by the cache, overwritten by the next call).
/// Inference only: dropout is off, nothing is kept for backward. Positions are absolute, so a full cache
/// (<see cref="Length"/> = <see cref="Capacity"/>) cannot slide; the caller crops its window and prefills again.
/// </summary>
public sealed class KvCache : IDisposable
{
    public KvCache(GptModel model, int batchSize = 1, int? capacity = null)
    {
        int cap = capacity ?? model.Config.ContextLength;
        if (batchSize <= 0) throw new ArgumentException($"A KV cache needs a positive batch size, got {batchSize}.");
        if (cap <= 0 || cap > model.Config.ContextLength)
            throw new ArgumentException($"A KV cache capacity must be in 1..{model.Config.ContextLength} (the context length), got {cap}.");
        Model = model;
        BatchSize = batchSize;
        Capacity = cap;
        int c = model.Config.EmbeddingDim;
        Keys = new Tensor[model.Config.Layers];
        Values = new Tensor[model.Config.Layers];
        for (int l = 0; l < Keys.Length; l++)
        {
            Keys[l] = new Tensor(batchSize, cap, c);
            Values[l] = new Tensor(batchSize, cap, c);
        }
        Logits = new Tensor(batchSize, model.Config.VocabSize);
        LastHidden = new Tensor(batchSize, c);
    }

    /// <summary>The model whose keys and values this holds.</summary>
    public GptModel Model { get; }

    public int BatchSize { get; }

    /// <summary>Most positions the cache can hold (the model's context length by default).</summary>
    public int Capacity { get; }

    /// <summary>Positions cached so far (the same for every row).</summary>
    public int Length { get; internal set; }

    /// <summary>Keys [batch, capacity, emb] of each block (all heads side by side, as the attention's W_key output).</summary>
    internal Tensor[] Keys { get; }

    /// <summary>Values [batch, capacity, emb] of each block.</summary>
    internal Tensor[] Values { get; }

    /// <summary>Logits [batch, vocab] of the last position after the latest Prefill/Step.</summary>
    public Tensor Logits { get; }

    /// <summary>Final-norm output of the last position of each row [batch, emb] (scratch for the output head).</summary>
    internal Tensor LastHidden { get; }

    /// <summary>Reused id buffer for <c>Step</c>, so a generation step allocates nothing.</summary>
    internal int[]? StepIds { get; set; }

    /// <summary>Forgets every cached position (the buffers are kept).</summary>
    public void Clear() => Length = 0;

    public void Dispose()
    {
        foreach (var t in Keys) t.Dispose();
        foreach (var t in Values) t.Dispose();
        Logits.Dispose();
        LastHidden.Dispose();
    }
}

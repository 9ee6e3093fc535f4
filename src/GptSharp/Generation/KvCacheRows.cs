using GptSharp.Model;
using GptSharp.Tensors;

namespace GptSharp.Generation;

/// <summary>
/// Moves a <see cref="KvCache"/>'s rows around for beam search: when the beams that survive a step descend from
/// other beams, row r must continue with the keys and values of its parent row.
/// </summary>
internal sealed unsafe class KvCacheRows : IDisposable
{
    private Tensor? _scratch;

    /// <summary>Row r of every layer's keys and values becomes old row <paramref name="sourceRows"/>[r] (cached positions only).</summary>
    public void Reorder(KvCache cache, ReadOnlySpan<int> sourceRows)
    {
        if (sourceRows.Length != cache.BatchSize)
            throw new ArgumentException($"Reorder needs one source row per cache row ({cache.BatchSize}), got {sourceRows.Length}.");
        bool identity = true;
        for (int r = 0; r < sourceRows.Length; r++)
        {
            if ((uint)sourceRows[r] >= (uint)cache.BatchSize) throw new ArgumentOutOfRangeException(nameof(sourceRows));
            identity &= sourceRows[r] == r;
        }
        if (identity || cache.Length == 0) return;

        int emb = cache.Model.Config.EmbeddingDim;
        long rowStride = (long)cache.Capacity * emb, used = (long)cache.Length * emb;
        if (_scratch is null || _scratch.Length < cache.BatchSize * used)
        {
            _scratch?.Dispose();
            _scratch = new Tensor(cache.BatchSize, cache.Capacity, emb);
        }
        float* scratch = _scratch.Data;
        for (int l = 0; l < cache.Keys.Length; l++)
        {
            Gather(cache.Keys[l].Data, scratch, sourceRows, rowStride, used);
            Gather(cache.Values[l].Data, scratch, sourceRows, rowStride, used);
        }
    }

    /// <summary>Row r of <paramref name="rows"/> becomes old row sources[r]: gathered into the scratch first, since a row may be the parent of several.</summary>
    private static void Gather(float* rows, float* scratch, ReadOnlySpan<int> sources, long rowStride, long used)
    {
        long bytes = used * sizeof(float);
        for (int r = 0; r < sources.Length; r++)
            Buffer.MemoryCopy(rows + sources[r] * rowStride, scratch + r * used, bytes, bytes);
        for (int r = 0; r < sources.Length; r++)
            Buffer.MemoryCopy(scratch + r * used, rows + r * rowStride, bytes, bytes);
    }

    public void Dispose() => _scratch?.Dispose();
}

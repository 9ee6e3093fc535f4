using System.Collections;
using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Data;

/// <summary>
/// PyTorch's <c>DataLoader(dataset, batch_size, shuffle, drop_last, num_workers=0)</c> over a
/// <see cref="GptDatasetV1"/>: yields (input, target) batches of shape [batch, maxLength].
/// <para>
/// Random draws are exactly PyTorch's, from the global generator passed in, so a run consumes the
/// stream in the book's order: every iteration start draws one int64 (<c>_BaseDataLoaderIter</c>'s
/// <c>_base_seed</c>, drawn even with no workers and no shuffle); a shuffling loader then draws a
/// second int64 as <c>RandomSampler.__iter__</c> does with no generator of its own, seeds a fresh
/// generator with it and takes <c>randperm(len(dataset))</c> from that generator.
/// </para>
/// </summary>
/// <remarks>
/// The batches an iterator yields are two buffers reused for every batch (a smaller pair for a short
/// last batch): a batch is valid until the iterator moves on, like the model's logits.
/// </remarks>
public sealed class DataLoader : IEnumerable<(TokenBatch Input, TokenBatch Target)>
{
    private readonly IRandomGenerator? _generator;

    /// <param name="generator">The global generator; required when <paramref name="shuffle"/> is true
    /// (pass it also without shuffle to consume the stream like PyTorch does).</param>
    public DataLoader(GptDatasetV1 dataset, int batchSize, bool shuffle, bool dropLast, IRandomGenerator? generator)
    {
        ArgumentNullException.ThrowIfNull(dataset);
        if (batchSize <= 0) throw new ArgumentException($"batch_size must be positive, got {batchSize}.");
        if (shuffle && generator is null) throw new ArgumentException("A shuffling data loader needs a random generator.");
        Dataset = dataset;
        BatchSize = batchSize;
        Shuffle = shuffle;
        DropLast = dropLast;
        _generator = generator;
    }

    public GptDatasetV1 Dataset { get; }
    public int BatchSize { get; }
    public bool Shuffle { get; }
    public bool DropLast { get; }

    /// <summary>Number of batches per pass (the book's <c>len(data_loader)</c>).</summary>
    public int Count => DropLast ? Dataset.Count / BatchSize : (Dataset.Count + BatchSize - 1) / BatchSize;

    /// <summary>Starts a pass over the data, drawing from the generator as <c>iter(data_loader)</c> does.</summary>
    public DataLoaderIterator StartEpoch()
    {
        long? samplerSeed = null;
        if (_generator is not null)
        {
            _generator.RandomInt64(); // _base_seed: drawn by every DataLoader iterator, used only by workers
            if (Shuffle) samplerSeed = _generator.RandomInt64();
        }
        return new DataLoaderIterator(this, samplerSeed, 0);
    }

    /// <summary>
    /// Recreates a pass saved in a checkpoint: same order (from <paramref name="samplerSeed"/>), continuing at
    /// batch <paramref name="nextBatch"/>. Draws nothing from the global generator.
    /// </summary>
    public DataLoaderIterator ResumeEpoch(long? samplerSeed, int nextBatch)
    {
        if (Shuffle && samplerSeed is null) throw new ArgumentException("Resuming a shuffled pass needs its sampler seed.");
        if (nextBatch < 0 || nextBatch > Count) throw new ArgumentException($"Batch {nextBatch} is outside a pass of {Count} batches.");
        return new DataLoaderIterator(this, Shuffle ? samplerSeed : null, nextBatch);
    }

    public IEnumerator<(TokenBatch Input, TokenBatch Target)> GetEnumerator() => StartEpoch();

    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    internal IRandomGenerator? Generator => _generator;
}

/// <summary>One pass of a <see cref="DataLoader"/>: the order of the windows and the position in it.</summary>
public sealed class DataLoaderIterator : IEnumerator<(TokenBatch Input, TokenBatch Target)>
{
    private readonly DataLoader _loader;
    private readonly int[]? _order;
    private readonly TokenBatch _input, _target;
    private TokenBatch? _tailInput, _tailTarget;
    private (TokenBatch, TokenBatch) _current;

    internal DataLoaderIterator(DataLoader loader, long? samplerSeed, int nextBatch)
    {
        _loader = loader;
        SamplerSeed = samplerSeed;
        NextBatch = nextBatch;
        int n = loader.Dataset.Count;
        if (samplerSeed is long seed)
        {
            if (loader.Generator is null) throw new InvalidOperationException("A shuffled pass needs the loader's generator kind.");
            _order = new int[n];
            loader.Generator.NewGenerator((ulong)seed).RandPerm(_order);
        }
        int length = loader.Dataset.MaxLength;
        int rows = Math.Max(1, Math.Min(loader.BatchSize, Math.Max(n, 1)));
        _input = new TokenBatch(new int[rows * length], rows, length);
        _target = new TokenBatch(new int[rows * length], rows, length);
    }

    /// <summary>The seed of this pass's shuffling generator, or null when the loader does not shuffle.</summary>
    public long? SamplerSeed { get; }

    /// <summary>Index of the batch the next <see cref="MoveNext"/> yields (the data order position).</summary>
    public int NextBatch { get; private set; }

    /// <summary>Number of batches in the whole pass.</summary>
    public int Count => _loader.Count;

    /// <summary>The dataset index of the first window the next batch holds (null at the end of the pass): where the pass is in the data.</summary>
    public int? NextWindow
    {
        get
        {
            if (NextBatch >= _loader.Count) return null;
            int first = NextBatch * _loader.BatchSize;
            return _order is null ? first : _order[first];
        }
    }

    public (TokenBatch Input, TokenBatch Target) Current => _current;

    object IEnumerator.Current => _current;

    public bool MoveNext()
    {
        if (NextBatch >= _loader.Count) return false;
        int n = _loader.Dataset.Count, batchSize = _loader.BatchSize;
        int first = NextBatch * batchSize;
        int rows = Math.Min(batchSize, n - first);
        TokenBatch input = _input, target = _target;
        if (rows != _input.BatchSize)
        {
            int length = _loader.Dataset.MaxLength;
            _tailInput ??= new TokenBatch(new int[rows * length], rows, length);
            _tailTarget ??= new TokenBatch(new int[rows * length], rows, length);
            input = _tailInput;
            target = _tailTarget;
        }
        int maxLength = _loader.Dataset.MaxLength;
        for (int r = 0; r < rows; r++)
        {
            int index = _order is null ? first + r : _order[first + r];
            _loader.Dataset.GetItem(index, input.Ids.AsSpan(r * maxLength, maxLength), target.Ids.AsSpan(r * maxLength, maxLength));
        }
        _current = (input, target);
        NextBatch++;
        return true;
    }

    public void Reset() => throw new NotSupportedException("Start a new pass with DataLoader.StartEpoch instead.");

    public void Dispose() { }
}

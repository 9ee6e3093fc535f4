using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;
using GptSharp.Data;
using GptSharp.Model;
using GptSharp.Tensors;

namespace GptSharp.Training;

/// <summary>
/// Data-parallel training over an <see cref="IProcessGroup"/>: which micro-batches of a step this rank trains on,
/// the gradient sum, identical starting weights, agreement on the settings and on stopping, split evaluation and
/// per-rank dropout streams. <see cref="SingleProcess"/> is the ordinary one-process run, where all of these are
/// the identity, so the <see cref="Trainer"/> has one code path.
/// </summary>
/// <remarks>
/// The equivalence rule: a step trains on <c>GradAccum × WorldSize</c> consecutive batches of the pass, the ones a
/// single process with <c>--grad-accum GradAccum × WorldSize</c> would accumulate; rank r takes the r-th block of
/// <c>GradAccum</c> of them. Summing the ranks' gradients then scaling by 1/micro-batches is what the single process
/// does, so two ranks are equivalent to <c>--grad-accum 2</c> up to the rounding of where each sum starts.
/// </remarks>
public sealed class DataParallel : IDisposable
{
    private readonly IProcessGroup _group;
    private readonly double[] _flag = new double[1];
    private ulong _dropoutSeed;

    internal DataParallel(IProcessGroup group)
    {
        _group = group;
    }

    /// <summary>One process: every operation is the identity and nothing native is loaded.</summary>
    public static DataParallel SingleProcess { get; } = new(new SingleProcessGroup());

    public int Rank => _group.Rank;
    public int WorldSize => _group.Size;

    /// <summary>Rank 0: the only one that prints, samples and writes the run directory and checkpoints.</summary>
    public bool IsRoot => _group.Rank == 0;

    public bool IsDistributed => _group.Size > 1;

    /// <summary>Whether micro-batch <paramref name="indexInStep"/> (0-based, over all ranks) of a step is this rank's.</summary>
    public bool OwnsMicroBatch(int indexInStep, int gradAccum) => indexInStep / gradAccum == _group.Rank;

    /// <summary>
    /// The optimizer step of a training step: the gradients summed over the ranks, averaged over the step's
    /// <paramref name="microBatches"/>, clipped to <paramref name="gradClip"/> (0 = off), then AdamW. One process does
    /// exactly that, in that order. N ranks shard the optimizer (ZeRO stage 1): the gradient arena is reduce-scattered
    /// slice by slice, each rank updates its block of every slice of the weights (and of the moments, which only it keeps
    /// current), and the updated weights are all-gathered: the bytes of one all-reduce, and 1/N of the AdamW work on each
    /// rank. AdamW is elementwise, so every weight gets the bits one process would give it from the same gradient sum.
    /// </summary>
    public void OptimizerStep(AdamW optimizer, int microBatches, double gradClip)
    {
        var parameters = optimizer.Parameters;
        float averaging = microBatches > 1 ? 1f / microBatches : 1f;
        if (!IsDistributed)
        {
            if (microBatches > 1) Gradients.Scale(parameters, averaging);
            if (gradClip > 0) Gradients.ClipGradNorm(parameters, gradClip);
            optimizer.Step();
            return;
        }
        long start = Stopwatch.GetTimestamp();
        LastStep = default;
        if (gradClip > 0)
        {
            // The clip needs the norm of each whole summed gradient (one float norm per tensor, as one process takes it),
            // so the gradients are all-reduced; each rank still updates only its blocks, and the weights are all-gathered.
            SumGradients(parameters);
            if (microBatches > 1) Gradients.Scale(parameters, averaging);
            Gradients.ClipGradNorm(parameters, gradClip);
            averaging = 1f;
            LastStep = LastStep with { ReduceSeconds = Stopwatch.GetElapsedTime(start).TotalSeconds };
        }
        optimizer.BeginShardedStep();
        ShardedUpdate(optimizer, reduce: gradClip <= 0, averaging);
    }

    /// <summary>Seconds of the last <see cref="OptimizerStep"/> on N ranks spent summing gradients (reduce-scatter, or the
    /// all-reduce of a clipped step), in AdamW on this rank's blocks, and all-gathering the weights.</summary>
    internal ShardedStepTimes LastStep { get; private set; }

    // Collectives go in slices of at most this many elements (see MpiProcessGroup.SliceBytes for why 16 MB), each a
    // whole number of equal blocks, one per rank.
    private const int SliceElements = (16 << 20) / sizeof(float);
    private float[]? _reducedBlock;

    /// <summary>
    /// The slices of the arena, [offset, offset + block × N): N blocks of at most <see cref="SliceElements"/> / N each, then
    /// a tail of fewer than N elements (block length 0) that every rank reduces and updates whole.
    /// </summary>
    private IEnumerable<(long Offset, int Block)> Slices(long length)
    {
        for (long offset = 0; offset < length;)
        {
            int block = (int)(Math.Min(SliceElements / WorldSize * WorldSize, length - offset) / WorldSize);
            yield return (offset, block);
            offset = block > 0 ? offset + (long)block * WorldSize : length;
        }
    }

    private unsafe void ShardedUpdate(AdamW optimizer, bool reduce, float averaging)
    {
        var arena = optimizer.Arena;
        float* grad = arena.Grads.Data, value = arena.Weights.Data;
        foreach (var (offset, block) in Slices(arena.Length))
        {
            long t0 = Stopwatch.GetTimestamp();
            if (block == 0)
            {
                // The tail (fewer elements than ranks): summed whole, updated by every rank alike.
                int tail = (int)(arena.Length - offset);
                if (reduce) _group.AllReduceSum(new Span<float>(grad + offset, tail));
                long t1 = Stopwatch.GetTimestamp();
                optimizer.StepRange(offset, tail, grad + offset, averaging);
                LastStep = LastStep.Add(Stopwatch.GetElapsedTime(t0, t1), Stopwatch.GetElapsedTime(t1), TimeSpan.Zero);
                continue;
            }
            long mine = offset + (long)Rank * block;
            long reduced;
            if (reduce)
            {
                _reducedBlock ??= new float[SliceElements / WorldSize];
                var sum = _reducedBlock.AsSpan(0, block);
                _group.ReduceScatterSum(new ReadOnlySpan<float>(grad + offset, block * WorldSize), sum);
                reduced = Stopwatch.GetTimestamp();
                fixed (float* g = sum) optimizer.StepRange(mine, block, g, averaging);
            }
            else
            {
                reduced = Stopwatch.GetTimestamp();
                optimizer.StepRange(mine, block, grad + mine, averaging);
            }
            long updated = Stopwatch.GetTimestamp();
            _group.AllGather(new Span<float>(value + offset, block * WorldSize));
            LastStep = LastStep.Add(Stopwatch.GetElapsedTime(t0, reduced), Stopwatch.GetElapsedTime(reduced, updated), Stopwatch.GetElapsedTime(updated));
        }
    }

    /// <summary>
    /// Brings every rank's blocks of the AdamW moments to every rank (after <see cref="OptimizerStep"/> each rank keeps
    /// only its own current), so that rank 0 can write them whole: a checkpoint holds the full moments whatever the world
    /// size. Every rank must call it at the same point; one process does nothing.
    /// </summary>
    public void GatherOptimizerState(AdamW optimizer)
    {
        if (!IsDistributed) return;
        foreach (var (offset, block) in Slices(optimizer.Arena.Length))
        {
            if (block == 0) continue; // the tail is current on every rank
            _group.AllGather(optimizer.ExpAvgArena.Slice((int)offset, block * WorldSize));
            _group.AllGather(optimizer.ExpAvgSqArena.Slice((int)offset, block * WorldSize));
        }
    }

    /// <summary>
    /// Sums every gradient over the ranks, in place: one collective over the gradient arena (the process group cuts it
    /// into slices). The caller then scales by 1/micro-batches as one process does.
    /// </summary>
    public void SumGradients(IReadOnlyList<Parameter> parameters)
    {
        if (!IsDistributed) return;
        _group.AllReduceSum(ParameterArena.Of(parameters).GradSpan);
    }

    /// <summary>
    /// The options that keep a saved run's global batch (<c>--grad-accum</c> × <paramref name="savedWorldSize"/>
    /// micro-batches per step) on this world size: N ranks resume on one process with <c>--grad-accum N</c>, and back.
    /// </summary>
    public TrainingOptions KeepGlobalBatch(TrainingOptions training, int savedWorldSize)
    {
        if (savedWorldSize < 1) throw new InvalidDataException($"TrainingRun.Resume: the checkpoint's world size is {savedWorldSize}; expected at least 1.");
        int microBatches = training.GradAccum * savedWorldSize;
        if (microBatches % WorldSize != 0)
            throw new ArgumentException($"TrainingRun.Resume: the run took {microBatches} micro-batches per step ({savedWorldSize} process(es) x TrainingOptions.GradAccum {training.GradAccum}), which {WorldSize} processes cannot split evenly; resume on a number of processes that divides {microBatches}.");
        return training with { GradAccum = microBatches / WorldSize };
    }

    /// <summary>Replaces <paramref name="values"/> by their sum over the ranks (in place; the identity for one process).</summary>
    public void SumOverRanks(Span<double> values)
    {
        if (IsDistributed) _group.AllReduceSum(values);
    }

    /// <summary>True on every rank when <paramref name="local"/> is true on any rank (a stop request seen by one rank).</summary>
    public bool Any(bool local)
    {
        if (!IsDistributed) return local;
        _flag[0] = local ? 1 : 0;
        _group.AllReduceSum(_flag);
        return _flag[0] > 0;
    }

    /// <summary>Gives every rank rank 0's weights, then checks that they arrived identical everywhere.</summary>
    public void BroadcastParameters(GptModel model)
    {
        if (!IsDistributed) return;
        // In pieces of 1 GiB: a span of bytes cannot hold a large model's weights.
        var weights = ParameterArena.Of(model.Parameters()).WeightSpan;
        for (int offset = 0; offset < weights.Length; offset += 1 << 28)
            _group.Broadcast(MemoryMarshal.AsBytes(weights.Slice(offset, Math.Min(1 << 28, weights.Length - offset))), 0);
        VerifyIdentical(model, "after the broadcast of the initial weights");
    }

    /// <summary>Throws on every rank when some rank's weights differ from rank 0's (a 64-bit checksum of the bits).</summary>
    public void VerifyIdentical(GptModel model, string when)
    {
        if (!IsDistributed) return;
        ulong checksum = Checksum(model.Parameters());
        int[] differing = RanksDifferingFromRoot(BitConverter.GetBytes(checksum));
        if (differing.Length > 0)
            throw new InvalidOperationException($"The weights of rank(s) {string.Join(", ", differing)} differ from rank 0's {when} (checksum {checksum:x16} on rank {Rank}).");
    }

    /// <summary>
    /// Throws on every rank when the ranks were started with different settings: <paramref name="settings"/> is
    /// everything that must agree (run configuration, data description, resumed state), as text.
    /// </summary>
    public void VerifySameSettings(string settings)
    {
        if (!IsDistributed) return;
        int[] differing = RanksDifferingFromRoot(Encoding.UTF8.GetBytes(settings));
        if (differing.Length > 0)
            throw new ArgumentException($"rank(s) {string.Join(", ", differing)} of {WorldSize} were started with settings (options, RunConfig.Data, TrainingRun.Resume) that differ from rank 0's; every rank must run the same command on the same data.");
    }

    /// <summary>The ranks whose <paramref name="value"/> differs from rank 0's (the same list on every rank).</summary>
    private int[] RanksDifferingFromRoot(byte[] value)
    {
        var length = new byte[sizeof(int)];
        BitConverter.TryWriteBytes(length, value.Length);
        _group.Broadcast(length, 0);
        byte[] rootValue = new byte[BitConverter.ToInt32(length)];
        if (IsRoot) value.CopyTo(rootValue, 0);
        _group.Broadcast(rootValue, 0);
        var differs = new double[WorldSize];
        differs[Rank] = rootValue.AsSpan().SequenceEqual(value) ? 0 : 1;
        _group.AllReduceSum(differs);
        return Enumerable.Range(0, WorldSize).Where(r => differs[r] > 0).ToArray();
    }

    /// <summary>A 64-bit FNV-style hash of the bits of the weight arena (deterministic across processes, unlike HashCode).</summary>
    public static ulong Checksum(IReadOnlyList<Parameter> parameters)
    {
        ulong hash = 14695981039346656037UL;
        var weights = ParameterArena.Of(parameters).WeightSpan;
        foreach (ulong word in MemoryMarshal.Cast<float, ulong>(weights))
            hash = (hash ^ word) * 1099511628211UL;
        if (weights.Length % 2 == 1)
            hash = (hash ^ BitConverter.SingleToUInt32Bits(weights[^1])) * 1099511628211UL;
        return hash;
    }

    /// <summary>
    /// Gives the model this rank's own dropout stream, of the run's generator kind, so that the shared global
    /// generator only orders the data and stays identical on every rank. One process keeps the book's stream.
    /// </summary>
    public void UseRankDropoutStream(GptModel model, ulong seed)
    {
        if (!IsDistributed) return;
        model.DropoutGenerator = model.DropoutGenerator.NewGenerator(0);
        _dropoutSeed = seed;
    }

    /// <summary>
    /// Reseeds this rank's dropout stream (<see cref="UseRankDropoutStream"/>) for <paramref name="step"/> from
    /// (seed, rank, step): reproducible for a given seed and world size, and a resumed run continues it with nothing saved.
    /// </summary>
    public void SeedDropout(GptModel model, long step)
    {
        if (!IsDistributed) return;
        ulong mixed = _dropoutSeed ^ ((ulong)Rank + 1) * 0x9E3779B97F4A7C15UL ^ ((ulong)step + 1) * 0xC2B2AE3D27D4EB4FUL;
        model.DropoutGenerator.ManualSeed(mixed & long.MaxValue);
    }

    /// <summary>
    /// The book's <c>evaluate_model</c> split over the ranks: rank r computes batches r, r+N, …; the per-batch
    /// losses are summed into place (x + 0 is exact) and added up in batch order, so every rank gets the numbers
    /// one process prints. Every rank starts both passes, keeping the global generator identical.
    /// </summary>
    public (double TrainLoss, double ValLoss) EvaluateModel(GptModel model, DataLoader trainLoader, DataLoader valLoader, int evalIter)
    {
        if (!IsDistributed) return Pretraining.EvaluateModel(model, trainLoader, valLoader, evalIter);
        return Pretraining.EvaluateModel(model, trainLoader, valLoader, loader => CalcLossLoader(loader, model, evalIter));
    }

    private double CalcLossLoader(DataLoader dataLoader, GptModel model, int numBatches)
    {
        if (dataLoader.Count == 0) return double.NaN;
        int batches = Math.Min(numBatches, dataLoader.Count);
        var losses = new double[batches];
        using (model.NoGrad())
        using (var pass = dataLoader.StartEpoch())
        {
            for (int i = 0; i < batches && pass.MoveNext(); i++)
                if (i % WorldSize == Rank)
                {
                    var (input, target) = pass.Current;
                    losses[i] = Pretraining.CalcLossBatch(input, target, model).Value;
                }
        }
        _group.AllReduceSum(losses);
        double totalLoss = 0;
        foreach (double loss in losses) totalLoss += loss;
        return totalLoss / batches;
    }

    /// <summary>Ends every rank at once after a fatal error on this one (see <see cref="IProcessGroup.Abort"/>).</summary>
    public void Abort(int exitCode) => _group.Abort(exitCode);

    public void Dispose()
    {
        if (!ReferenceEquals(this, SingleProcess)) _group.Dispose();
    }

    private sealed class SingleProcessGroup : IProcessGroup
    {
        public int Rank => 0;
        public int Size => 1;
        public void AllReduceSum(Span<float> values) { }
        public void AllReduceSum(Span<double> values) { }
        public void ReduceScatterSum(ReadOnlySpan<float> values, Span<float> block) => values.CopyTo(block);
        public void AllGather(Span<float> values) { }
        public void Broadcast(Span<byte> values, int root) { }
        public void Abort(int exitCode) => Environment.Exit(exitCode);
        public void Dispose() { }
    }
}

/// <summary>Where a data-parallel optimizer step's time went (<see cref="DataParallel.LastStep"/>), in seconds.</summary>
internal readonly record struct ShardedStepTimes(double ReduceSeconds, double OptimizerSeconds, double GatherSeconds)
{
    internal ShardedStepTimes Add(TimeSpan reduce, TimeSpan optimizer, TimeSpan gather) =>
        new(ReduceSeconds + reduce.TotalSeconds, OptimizerSeconds + optimizer.TotalSeconds, GatherSeconds + gather.TotalSeconds);
}

using GptSharp.Distributed;
using GptSharp.Training;

namespace GptSharp.Tests.Distributed;

/// <summary>The parts of data-parallel training that need no second process.</summary>
public sealed class DataParallelTests
{
    [Fact]
    public void OneProcessIsTheIdentityAndLoadsNothing()
    {
        var single = DistributedTraining.Start(DistributedTraining.Off);
        Assert.Same(DataParallel.SingleProcess, single);
        Assert.Equal((0, 1, true, false), (single.Rank, single.WorldSize, single.IsRoot, single.IsDistributed));
        Assert.True(single.Any(true));
        Assert.False(single.Any(false));
        Assert.True(single.OwnsMicroBatch(3, gradAccum: 4));
        // Not started by mpirun (the test host has no OMPI_COMM_WORLD_SIZE): auto is one process too.
        if (!MpiProcessGroup.StartedByMpirun) Assert.Same(DataParallel.SingleProcess, DistributedTraining.Start(DistributedTraining.Auto));
        Assert.DoesNotContain(System.Diagnostics.Process.GetCurrentProcess().Modules.Cast<System.Diagnostics.ProcessModule>(),
            m => m.ModuleName.StartsWith("libmpi", StringComparison.Ordinal));
    }

    [Fact]
    public void ResumingKeepsTheGlobalBatch()
    {
        var single = DataParallel.SingleProcess;
        var options = new TrainingOptions { GradAccum = 3 };
        // A 4-rank run with --grad-accum 3 continues on one process with --grad-accum 12.
        Assert.Equal(12, single.KeepGlobalBatch(options, savedWorldSize: 4).GradAccum);
        Assert.Equal(3, single.KeepGlobalBatch(options, savedWorldSize: 1).GradAccum);
        Assert.Throws<InvalidDataException>(() => single.KeepGlobalBatch(options, savedWorldSize: 0));
    }

    [Fact]
    public void ChecksumSeesEveryBit()
    {
        using var model = new GptSharp.Model.GptModel(GptSharp.Model.GptConfig.Book124M with { EmbeddingDim = 8, Layers = 1, Heads = 2, ContextLength = 4 },
            new GptSharp.Randomness.FastRandom(1));
        ulong before = DataParallel.Checksum(model.Parameters());
        Assert.Equal(before, DataParallel.Checksum(model.Parameters()));
        var last = model.Parameters()[^1].Value.Span;
        last[^1] = BitConverter.Int32BitsToSingle(BitConverter.SingleToInt32Bits(last[^1]) ^ 1);
        Assert.NotEqual(before, DataParallel.Checksum(model.Parameters()));
    }

    [Fact]
    public void EachRankDrawsItsOwnReproducibleDropoutStream()
    {
        float[] Masks(int rank, long step)
        {
            using var model = new GptSharp.Model.GptModel(GptSharp.Model.GptConfig.Book124M with { EmbeddingDim = 8, Layers = 1, Heads = 2, ContextLength = 4 },
                GptSharp.Randomness.RandomGenerators.Create("torch", 123));
            var parallel = new DataParallel(new RankOfTwo(rank));
            parallel.UseRankDropoutStream(model, seed: 123);
            parallel.SeedDropout(model, step);
            var masks = new float[64];
            model.DropoutGenerator.Bernoulli(masks, 0.5);
            return masks;
        }
        Assert.Equal(Masks(1, 7), Masks(1, 7));       // same seed, rank and step: the same masks (a resumed run too)
        Assert.NotEqual(Masks(0, 7), Masks(1, 7));    // ranks differ
        Assert.NotEqual(Masks(1, 7), Masks(1, 8));    // steps differ
    }

    /// <summary>Rank <paramref name="rank"/> of a two-process group whose collectives keep this rank's values.</summary>
    private sealed class RankOfTwo(int rank) : IProcessGroup
    {
        public int Rank => rank;
        public int Size => 2;
        public void AllReduceSum(Span<float> values) { }
        public void AllReduceSum(Span<double> values) { }
        public void ReduceScatterSum(ReadOnlySpan<float> values, Span<float> block) => values.Slice(rank * block.Length, block.Length).CopyTo(block);
        public void AllGather(Span<float> values) { }
        public void Broadcast(Span<byte> values, int root) { }
        public void Abort(int exitCode) => throw new InvalidOperationException("abort");
        public void Dispose() { }
    }

    [Fact]
    public void UnknownModeIsAOneLineError() =>
        Assert.Contains("DistributedTraining mode", Assert.Throws<ArgumentException>(() => DistributedTraining.Start("slurm")).Message);
}

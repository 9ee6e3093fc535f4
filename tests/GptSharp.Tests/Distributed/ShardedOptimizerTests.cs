using GptSharp.Model;
using GptSharp.Training;

namespace GptSharp.Tests.Distributed;

/// <summary>
/// The sharded optimizer step (<see cref="DataParallel.OptimizerStep"/>) on N ranks, run as N threads over an in-process
/// group, against its reference: one process summing the same gradients, averaging, clipping and stepping AdamW.
/// Gradients are multiples of 1/64 in a small range, so every sum is exact in any order and the weights must agree bit for bit.
/// </summary>
public sealed class ShardedOptimizerTests
{
    // Lengths that leave tails of fewer elements than ranks, and one longer than a 16 MB slice (4 Mi floats).
    private static readonly int[] Lengths = [1, 2, 5, 768, 1001, (4 << 20) + 7];

    [Theory]
    [InlineData(2, 2, 0.0)]
    [InlineData(3, 6, 0.0)]
    [InlineData(3, 3, 0.05)] // clipped: the gradients are all-reduced for the norm, the update still sharded
    public void ShardedStepsGiveOneProcessesWeightsAndMoments(int ranks, int microBatches, double gradClip)
    {
        const int steps = 3;
        // The reference: one process with the ranks' summed gradients.
        var single = NewOptimizer();
        for (int step = 0; step < steps; step++)
        {
            foreach (var (p, i) in single.Parameters.Select((p, i) => (p, i)))
                for (int r = 0; r < ranks; r++)
                    for (int j = 0; j < p.Length; j++) p.Grad.Span[j] += RankGradient(step, r, i, j);
            DataParallel.SingleProcess.OptimizerStep(single, microBatches, gradClip);
            single.ZeroGrad();
        }

        var world = new InProcessWorld(ranks);
        var optimizers = Enumerable.Range(0, ranks).Select(_ => NewOptimizer()).ToArray();
        var failures = new System.Collections.Concurrent.ConcurrentQueue<Exception>();
        var threads = Enumerable.Range(0, ranks).Select(r => new Thread(() =>
        {
            try { RunRank(r); }
            catch (Exception e) { failures.Enqueue(e); world.Fail(); }
        })).ToArray();
        foreach (var t in threads) t.Start();
        foreach (var t in threads) t.Join();
        Assert.Empty(failures);

        void RunRank(int r)
        {
            var parallel = new DataParallel(world.Rank(r));
            var optimizer = optimizers[r];
            for (int step = 0; step < steps; step++)
            {
                foreach (var (p, i) in optimizer.Parameters.Select((p, i) => (p, i)))
                    for (int j = 0; j < p.Length; j++) p.Grad.Span[j] = RankGradient(step, r, i, j);
                parallel.OptimizerStep(optimizer, microBatches, gradClip);
            }
            parallel.GatherOptimizerState(optimizer);
        }

        foreach (var optimizer in optimizers)
        {
            Assert.Equal(single.StepCount, optimizer.StepCount);
            for (int i = 0; i < Lengths.Length; i++)
            {
                Assert.True(single.Parameters[i].Value.Span.SequenceEqual(optimizer.Parameters[i].Value.Span), $"weights of tensor {i} (length {Lengths[i]})");
                Assert.True(single.ExpAvg[i].Span.SequenceEqual(optimizer.ExpAvg[i].Span), $"first moments of tensor {i}");
                Assert.True(single.ExpAvgSq[i].Span.SequenceEqual(optimizer.ExpAvgSq[i].Span), $"second moments of tensor {i}");
            }
        }
        foreach (var o in optimizers.Append(single)) Dispose(o);
    }

    private static float RankGradient(int step, int rank, int tensor, int index) =>
        ((index * 7 + tensor * 13 + rank * 29 + step * 31) % 97 - 48) / 64f;

    private static AdamW NewOptimizer()
    {
        var parameters = Lengths.Select((n, i) => new Parameter($"p{i}", n)).ToArray();
        foreach (var (p, i) in parameters.Select((p, i) => (p, i)))
            for (int j = 0; j < p.Length; j++) p.Value.Span[j] = ((j * 11 + i) % 101 - 50) / 100f;
        return new AdamW(parameters, lr: 1e-2f, weightDecay: 0.1f);
    }

    private static void Dispose(AdamW optimizer)
    {
        foreach (var p in optimizer.Parameters) p.Dispose();
        optimizer.Dispose();
    }

    /// <summary>N ranks as threads: each collective copies every rank's buffer in, combines at a barrier, copies out.</summary>
    private sealed class InProcessWorld(int size)
    {
        private readonly Barrier _barrier = new(size);
        private readonly float[][] _floats = new float[size][];
        private readonly double[][] _doubles = new double[size][];

        public IProcessGroup Rank(int rank) => new Member(this, rank);

        /// <summary>A rank failed: the others leave their barrier instead of waiting for it forever.</summary>
        public void Fail() => _barrier.Dispose();

        private sealed class Member(InProcessWorld world, int rank) : IProcessGroup
        {
            public int Rank => rank;
            public int Size => world._floats.Length;

            public void AllReduceSum(Span<float> values) => Sum(values, world._floats);

            public void AllReduceSum(Span<double> values) => Sum(values, world._doubles);

            private void Sum<T>(Span<T> values, T[][] buffers) where T : System.Numerics.INumber<T>
            {
                buffers[rank] = values.ToArray();
                world._barrier.SignalAndWait();
                for (int j = 0; j < values.Length; j++)
                {
                    T sum = T.Zero;
                    for (int r = 0; r < Size; r++) sum += buffers[r][j];
                    values[j] = sum;
                }
                world._barrier.SignalAndWait();
            }

            public void ReduceScatterSum(ReadOnlySpan<float> values, Span<float> block)
            {
                Assert.Equal(values.Length, block.Length * Size);
                var all = values.ToArray();
                AllReduceSum(all);
                all.AsSpan(rank * block.Length, block.Length).CopyTo(block);
            }

            public void AllGather(Span<float> values)
            {
                int n = values.Length / Size;
                Assert.Equal(values.Length, n * Size);
                world._floats[rank] = values.ToArray();
                world._barrier.SignalAndWait();
                for (int r = 0; r < Size; r++) world._floats[r].AsSpan(r * n, n).CopyTo(values[(r * n)..]);
                world._barrier.SignalAndWait();
            }

            public void Broadcast(Span<byte> values, int root) => throw new NotSupportedException();
            public void Abort(int exitCode) => throw new InvalidOperationException("abort");
            public void Dispose() { }
        }
    }
}

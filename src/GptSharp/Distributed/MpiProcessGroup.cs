using GptSharp.Training;

namespace GptSharp.Distributed;

/// <summary>
/// The processes <c>mpirun</c> started, as an <see cref="IProcessGroup"/> over Open MPI's <c>MPI_COMM_WORLD</c>.
/// Created once per process (MPI can be initialized only once); disposing it calls <c>MPI_Finalize</c>.
/// </summary>
internal sealed unsafe class MpiProcessGroup : IProcessGroup
{
    // Collectives go in slices of 16 MB. Open MPI's reduction allocates a temporary buffer the size of the message;
    // glibc keeps freed blocks up to 32 MB in its heap but maps and unmaps larger ones, so a 154 MB token-embedding
    // gradient in one call page-faults its whole temporary buffer every step. Measured on 2 ranks over shared
    // memory: 160 MB all-reduced in one call 3.7-6 s, in 32 MB slices 3.7 s, in 16 MB slices 0.57 s, in 4 MB 1.4 s.
    // (Slices also keep counts far below MPI's int limit.)
    private const int SliceBytes = 16 << 20;
    private readonly OpenMpiLibrary _mpi;
    private bool _disposed;
    private float[] _ring = [];

    private MpiProcessGroup(OpenMpiLibrary mpi)
    {
        _mpi = mpi;
        Rank = mpi.Rank();
        Size = mpi.Size();
    }

    /// <summary>Loads Open MPI and initializes MPI (throws one line naming the install command when it is missing).</summary>
    public static MpiProcessGroup Start()
    {
        var mpi = OpenMpiLibrary.Load();
        mpi.Init();
        return new MpiProcessGroup(mpi);
    }

    /// <summary>True when Open MPI's launcher (<c>mpirun</c>/<c>mpiexec</c>) started this process.</summary>
    public static bool StartedByMpirun => Environment.GetEnvironmentVariable("OMPI_COMM_WORLD_SIZE") is not null;

    public int Rank { get; }
    public int Size { get; }

    public void AllReduceSum(Span<float> values)
    {
        const int slice = SliceBytes / sizeof(float);
        fixed (float* p = values)
            for (int start = 0; start < values.Length; start += slice)
                _mpi.AllReduceInPlace(p + start, Math.Min(slice, values.Length - start), _mpi.Float, _mpi.OpSum);
    }

    public void AllReduceSum(Span<double> values)
    {
        const int slice = SliceBytes / sizeof(double);
        fixed (double* p = values)
            for (int start = 0; start < values.Length; start += slice)
                _mpi.AllReduceInPlace(p + start, Math.Min(slice, values.Length - start), _mpi.Double, _mpi.OpSum);
    }

    // A ring of MPI_Sendrecv calls, not MPI_Reduce_scatter_block: Open MPI 4.1's reduce-scatter (every tuned algorithm)
    // took 2.1-2.9 s per 650 MB on 2 ranks over shared memory here, its all-gather 0.11 s and all-reduce 0.25 s; the ring
    // receives straight into our buffers (vader's single-copy CMA) and allocates nothing. Step k (0..N-2): send the
    // partial sum of block (rank-1-k) mod N to the next rank, receive block (rank-2-k) mod N from the previous one and
    // add this rank's gradient to it; the last block received is this rank's. Each block is summed on one rank only.
    public void ReduceScatterSum(ReadOnlySpan<float> values, Span<float> block)
    {
        int n = block.Length;
        if (values.Length != (long)n * Size)
            throw new ArgumentException($"ReduceScatterSum: {values.Length} values do not make {Size} blocks of {n}.");
        if (Size == 1) { values.CopyTo(block); return; }
        if (_ring.Length < 2 * n) _ring = new float[2 * n]; // partial sums in flight (once, at the largest block)
        int next = (Rank + 1) % Size, previous = (Rank + Size - 1) % Size;
        fixed (float* v = values)
        fixed (float* b = block)
        fixed (float* ring = _ring)
        {
            float* send = v + (long)((Rank + Size - 1) % Size) * n; // step 0 sends this rank's own gradient of the block
            for (int step = 0; step < Size - 1; step++)
            {
                float* receive = step == Size - 2 ? b : ring + (step % 2) * n;
                _mpi.SendReceive(send, next, receive, previous, n, _mpi.Float);
                int received = ((Rank - 2 - step) % Size + Size) % Size;
                var sum = new Span<float>(receive, n);
                System.Numerics.Tensors.TensorPrimitives.Add(sum, new ReadOnlySpan<float>(v + (long)received * n, n), sum);
                send = receive;
            }
        }
    }

    public void AllGather(Span<float> values)
    {
        if (values.Length % Size != 0)
            throw new ArgumentException($"AllGather: {values.Length} values do not make {Size} equal blocks.");
        fixed (float* v = values)
            _mpi.AllGatherInPlace(v, values.Length / Size, _mpi.Float);
    }

    public void Broadcast(Span<byte> values, int root)
    {
        const int slice = SliceBytes;
        fixed (byte* p = values)
            for (int start = 0; start < values.Length; start += slice)
                _mpi.Broadcast(p + start, Math.Min(slice, values.Length - start), _mpi.Byte, root);
    }

    public void Abort(int exitCode)
    {
        Console.Out.Flush();
        Console.Error.Flush();
        _mpi.Abort(exitCode);
        Environment.Exit(exitCode); // MPI_Abort does not return; in case it does
    }

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _mpi.FinalizeMpi();
    }
}

/// <summary>How <c>gptsharp train</c> picks its process group from <c>--distributed</c>.</summary>
public static class DistributedTraining
{
    public const string Auto = "auto", Mpi = "mpi", Off = "off";
    public static IReadOnlyList<string> Modes { get; } = [Auto, Mpi, Off];

    /// <summary>
    /// <c>auto</c>: MPI when <c>mpirun</c> started this process, else one process; <c>mpi</c>: MPI or a one-line error;
    /// <c>off</c>: one process. Only the MPI cases load a native library.
    /// </summary>
    public static DataParallel Start(string mode) => mode switch
    {
        Off => DataParallel.SingleProcess,
        Auto when !MpiProcessGroup.StartedByMpirun => DataParallel.SingleProcess,
        Auto or Mpi => new DataParallel(MpiProcessGroup.Start()),
        _ => throw new ArgumentException($"DistributedTraining mode must be one of {string.Join(", ", Modes)}, got '{mode}'."),
    };
}

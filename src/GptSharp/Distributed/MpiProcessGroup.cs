using GptSharp.Training;

namespace GptSharp.Distributed;

/// <summary>
/// The processes <c>mpirun</c> started, as an <see cref="IProcessGroup"/> over Open MPI's <c>MPI_COMM_WORLD</c>.
/// Created once per process (MPI can be initialized only once); disposing it calls <c>MPI_Finalize</c>.
/// </summary>
public sealed unsafe class MpiProcessGroup : IProcessGroup
{
    // MPI counts are ints: larger buffers go in slices (a gpt2-xl token embedding is 80M floats, still one slice).
    private const int MaxCount = 1 << 30;
    private readonly OpenMpiLibrary _mpi;
    private bool _disposed;

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
        fixed (float* p = values)
            for (int start = 0; start < values.Length; start += MaxCount)
                _mpi.AllReduceInPlace(p + start, Math.Min(MaxCount, values.Length - start), _mpi.Float, _mpi.OpSum);
    }

    public void AllReduceSum(Span<double> values)
    {
        fixed (double* p = values)
            for (int start = 0; start < values.Length; start += MaxCount)
                _mpi.AllReduceInPlace(p + start, Math.Min(MaxCount, values.Length - start), _mpi.Double, _mpi.OpSum);
    }

    public void Broadcast(Span<byte> values, int root)
    {
        fixed (byte* p = values)
            for (int start = 0; start < values.Length; start += MaxCount)
                _mpi.Broadcast(p + start, Math.Min(MaxCount, values.Length - start), _mpi.Byte, root);
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
        _mpi.Finalize();
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
        _ => throw new ArgumentException($"--distributed must be one of {string.Join(", ", Modes)}, got '{mode}'."),
    };
}

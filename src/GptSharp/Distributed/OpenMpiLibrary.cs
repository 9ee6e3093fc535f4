using System.Runtime.InteropServices;

namespace GptSharp.Distributed;

/// <summary>
/// The few functions of Open MPI's C API that data-parallel training calls, bound at run time from
/// <c>libmpi.so.40</c> (Open MPI 3, 4 and 5) with <see cref="NativeLibrary"/>: a process that never asks for MPI
/// loads nothing. Open MPI's handles (<c>MPI_COMM_WORLD</c>, <c>MPI_FLOAT</c>, <c>MPI_SUM</c>, …) are the addresses
/// of exported globals (<c>ompi_mpi_comm_world</c>, …), so they come from <see cref="NativeLibrary.GetExport"/> too.
/// </summary>
/// <remarks>
/// The <c>MPI.NET</c> package (1.4.0) does not fit: it binds <c>msmpi.dll</c> with MPICH/MS-MPI's integer handles
/// (<c>MPI_COMM_WORLD = 0x44000000</c>), which Open MPI's pointer handles cannot take.
/// </remarks>
internal sealed unsafe class OpenMpiLibrary
{
    public const string LibraryName = "libmpi.so.40";
    public const string InstallLine = "apt-get install openmpi-bin libopenmpi-dev";
    private const int ThreadSerialized = 2; // MPI_THREAD_SERIALIZED: worker threads compute, one thread at a time calls MPI
    private const int MaxErrorString = 256;

    public readonly nint CommWorld, Float, Double, Byte, OpSum;
    private readonly nint _errorsReturn;

    private readonly delegate* unmanaged<int*, nint, int, int*, int> _initThread;
    private readonly delegate* unmanaged<int*, int> _finalized;
    private readonly delegate* unmanaged<int> _finalize;
    private readonly delegate* unmanaged<nint, int*, int> _commRank, _commSize;
    private readonly delegate* unmanaged<nint, nint, int> _commSetErrhandler;
    private readonly delegate* unmanaged<nint, nint, int, nint, nint, nint, int> _allreduce;
    private readonly delegate* unmanaged<nint, int, nint, int, nint, int> _bcast;
    private readonly delegate* unmanaged<nint, int, nint, int, int, nint, int, nint, int, int, nint, nint, int> _sendrecv;
    private readonly delegate* unmanaged<nint, int, nint, nint, int, nint, nint, int> _allgather;
    private readonly delegate* unmanaged<nint, int, int> _abort;
    private readonly delegate* unmanaged<int, byte*, int*, int> _errorString;

    private OpenMpiLibrary(nint library)
    {
        nint Get(string name) => NativeLibrary.GetExport(library, name);
        CommWorld = Get("ompi_mpi_comm_world");
        Float = Get("ompi_mpi_float");
        Double = Get("ompi_mpi_double");
        Byte = Get("ompi_mpi_byte");
        OpSum = Get("ompi_mpi_op_sum");
        _errorsReturn = Get("ompi_mpi_errors_return");
        _initThread = (delegate* unmanaged<int*, nint, int, int*, int>)Get("MPI_Init_thread");
        _finalized = (delegate* unmanaged<int*, int>)Get("MPI_Finalized");
        _finalize = (delegate* unmanaged<int>)Get("MPI_Finalize");
        _commRank = (delegate* unmanaged<nint, int*, int>)Get("MPI_Comm_rank");
        _commSize = (delegate* unmanaged<nint, int*, int>)Get("MPI_Comm_size");
        _commSetErrhandler = (delegate* unmanaged<nint, nint, int>)Get("MPI_Comm_set_errhandler");
        _allreduce = (delegate* unmanaged<nint, nint, int, nint, nint, nint, int>)Get("MPI_Allreduce");
        _bcast = (delegate* unmanaged<nint, int, nint, int, nint, int>)Get("MPI_Bcast");
        _sendrecv = (delegate* unmanaged<nint, int, nint, int, int, nint, int, nint, int, int, nint, nint, int>)Get("MPI_Sendrecv");
        _allgather = (delegate* unmanaged<nint, int, nint, nint, int, nint, nint, int>)Get("MPI_Allgather");
        _abort = (delegate* unmanaged<nint, int, int>)Get("MPI_Abort");
        _errorString = (delegate* unmanaged<int, byte*, int*, int>)Get("MPI_Error_string");
    }

    /// <summary>Loads Open MPI, or throws one line saying how to install it.</summary>
    public static OpenMpiLibrary Load()
    {
        // RTLD_GLOBAL: Open MPI's components (plugins it dlopens during MPI_Init) resolve their symbols in libmpi.
        nint library = dlopen(LibraryName, RtldNow | RtldGlobal);
        if (library == 0)
            throw new NotSupportedException($"DistributedTraining mode mpi: Open MPI's {LibraryName} could not be loaded ({Marshal.PtrToStringUTF8(dlerror())}); install it with `{InstallLine}`.");
        return new OpenMpiLibrary(library);
    }

    /// <summary>MPI_Init_thread with MPI_THREAD_SERIALIZED, errors returned as codes (not Open MPI's abort) on MPI_COMM_WORLD.</summary>
    public void Init()
    {
        // Open MPI's SIGSEGV/SIGBUS/SIGFPE/SIGILL handlers would take the signals .NET turns into exceptions
        // (a NullReferenceException is a SIGSEGV): leave the signals to the runtime. setenv, not
        // Environment.SetEnvironmentVariable, which .NET keeps to itself.
        setenv("OMPI_MCA_opal_signal", "", 1);
        // Shared memory without the single-copy mechanism (CMA's process_vm_readv), unless the user chose one: copied
        // through vader's shared segment, a 650 MB reduce-scatter + all-gather took 0.14 s instead of 0.22-0.25 s, and an
        // all-reduce 0.20-0.25 s instead of 0.53-0.83 s (2 ranks, this 2-core EPYC VM). Open MPI 5 calls the component sm.
        setenv("OMPI_MCA_btl_vader_single_copy_mechanism", "none", 0);
        setenv("OMPI_MCA_btl_sm_single_copy_mechanism", "none", 0);
        int provided;
        Check(_initThread(null, 0, ThreadSerialized, &provided), "MPI_Init_thread");
        if (provided < ThreadSerialized)
            throw new NotSupportedException($"Open MPI provides thread level {provided}; GptSharp needs MPI_THREAD_SERIALIZED ({ThreadSerialized}).");
        Check(_commSetErrhandler(CommWorld, _errorsReturn), "MPI_Comm_set_errhandler");
    }

    public int Rank()
    {
        int rank;
        Check(_commRank(CommWorld, &rank), "MPI_Comm_rank");
        return rank;
    }

    public int Size()
    {
        int size;
        Check(_commSize(CommWorld, &size), "MPI_Comm_size");
        return size;
    }

    /// <summary>In-place MPI_Allreduce (MPI_IN_PLACE is the address 1).</summary>
    public void AllReduceInPlace(void* buffer, int count, nint datatype, nint op) =>
        Check(_allreduce(1, (nint)buffer, count, datatype, op, CommWorld), "MPI_Allreduce");

    /// <summary>MPI_Sendrecv of <paramref name="count"/> elements each way (MPI_STATUS_IGNORE is the null address).</summary>
    public void SendReceive(void* send, int destination, void* receive, int source, int count, nint datatype) =>
        Check(_sendrecv((nint)send, count, datatype, destination, 0, (nint)receive, count, datatype, source, 0, CommWorld, 0), "MPI_Sendrecv");

    /// <summary>In-place MPI_Allgather: rank r's block of <paramref name="count"/> elements is already at r × count.</summary>
    public void AllGatherInPlace(void* buffer, int count, nint datatype) =>
        Check(_allgather(1, 0, datatype, (nint)buffer, count, datatype, CommWorld), "MPI_Allgather");

    public void Broadcast(void* buffer, int count, nint datatype, int root) =>
        Check(_bcast((nint)buffer, count, datatype, root, CommWorld), "MPI_Bcast");

    public void Abort(int exitCode) => _abort(CommWorld, exitCode);

    public void FinalizeMpi()
    {
        int finalized;
        if (_finalized(&finalized) == 0 && finalized == 0) _finalize();
    }

    private void Check(int code, string function)
    {
        if (code == 0) return;
        byte* text = stackalloc byte[MaxErrorString + 1];
        int length = 0;
        string message = _errorString(code, text, &length) == 0 ? Marshal.PtrToStringUTF8((nint)text, length) : $"error {code}";
        throw new IOException($"{function} failed: {message} (did another rank stop? mpirun names it).");
    }

    private const int RtldNow = 2, RtldGlobal = 0x100;

    [DllImport("libc.so.6", EntryPoint = "dlopen")]
    private static extern nint dlopen([MarshalAs(UnmanagedType.LPUTF8Str)] string file, int mode);

    [DllImport("libc.so.6", EntryPoint = "dlerror")]
    private static extern nint dlerror();

    [DllImport("libc.so.6", EntryPoint = "setenv")]
    private static extern int setenv([MarshalAs(UnmanagedType.LPUTF8Str)] string name, [MarshalAs(UnmanagedType.LPUTF8Str)] string value, int overwrite);
}

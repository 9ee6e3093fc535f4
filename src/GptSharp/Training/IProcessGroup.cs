namespace GptSharp.Training;

/// <summary>
/// The collective operations data-parallel training needs from the processes of one run (MPI's communicator).
/// Every rank must call the same operations in the same order with the same lengths; a call returns once all
/// ranks made it. The single-process group does nothing; <c>GptSharp.Distributed</c> implements it on Open MPI.
/// </summary>
internal interface IProcessGroup : IDisposable
{
    /// <summary>This process's index, 0..<see cref="Size"/>-1 (MPI's rank).</summary>
    int Rank { get; }

    /// <summary>Number of processes (MPI's world size).</summary>
    int Size { get; }

    /// <summary>Replaces <paramref name="values"/> on every rank by their sum over all ranks (MPI_Allreduce, in place).
    /// Every rank receives the same bits.</summary>
    void AllReduceSum(Span<float> values);

    /// <inheritdoc cref="AllReduceSum(Span{float})"/>
    void AllReduceSum(Span<double> values);

    /// <summary>Sums <paramref name="values"/> (<see cref="Size"/> blocks of <paramref name="block"/>'s length) over all ranks and
    /// gives this rank block <see cref="Rank"/> of the sum (MPI_Reduce_scatter_block). Every rank's block gets the bits
    /// <see cref="AllReduceSum(Span{float})"/> would give it.</summary>
    void ReduceScatterSum(ReadOnlySpan<float> values, Span<float> block);

    /// <summary>Gives every rank every rank's block of <paramref name="values"/> (<see cref="Size"/> equal blocks, rank r's at
    /// block r), in place (MPI_Allgather).</summary>
    void AllGather(Span<float> values);

    /// <summary>Copies <paramref name="values"/> of rank <paramref name="root"/> to every rank (MPI_Bcast).</summary>
    void Broadcast(Span<byte> values, int root);

    /// <summary>Ends every process of the run at once with <paramref name="exitCode"/> (MPI_Abort): for a fatal error on one
    /// rank, which would otherwise leave the others waiting in their next collective.</summary>
    void Abort(int exitCode);
}

using GptSharp.Checkpoints;
using GptSharp.Formats;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Formats.SafeTensors;

namespace GptSharp.Training;

/// <summary>
/// Keeps <c>best.safetensors</c> (the weights of the lowest validation loss) on disk without making the run wait for the
/// disk: <see cref="Offer"/> copies the weights in memory (a memcpy, ~0.1 s for 124M) and a background thread writes the
/// file atomically and durably while training goes on. In the book's run the best evaluation comes mid-run, so its
/// 650 MB are written during the later steps instead of at the end. When a better model comes while a write is still
/// going, the newer copy waits in a second buffer and is written next (the one in between is skipped: only the newest
/// best matters). <see cref="Flush"/> waits for the file to be on disk; a checkpoint calls it first, so a checkpoint on
/// disk never claims a best loss that <c>best.safetensors</c> does not hold yet.
/// </summary>
internal sealed class BestModelWriter : IDisposable
{
    private readonly string _path;
    private readonly GptModel _model;
    private readonly object _lock = new();
    private WeightsCopy? _writing; // read by the writer thread while _task runs
    private WeightsCopy? _next;    // filled by the training thread while a write is going
    private bool _nextPending;
    private Task? _task;
    private Exception? _failure;

    public BestModelWriter(string path, GptModel model)
    {
        _path = path;
        _model = model;
    }

    /// <summary>The run's current weights are the best so far: copy them and have them written.</summary>
    public void Offer()
    {
        var parameters = _model.Parameters();
        lock (_lock)
        {
            if (_task is null)
            {
                Copy(parameters, ref _writing);
                _task = Task.Factory.StartNew(WriteLoop, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
            }
            else
            {
                // Under the lock: the writer swaps _next in only between two files, never while it is being filled.
                Copy(parameters, ref _next);
                _nextPending = true;
            }
        }
    }

    /// <summary>Waits until the newest offered weights are on disk; a failed write is thrown here (once).</summary>
    public void Flush()
    {
        Task? task;
        lock (_lock) task = _task;
        task?.Wait();
        lock (_lock)
        {
            if (_failure is not { } failure) return;
            _failure = null;
            throw new IOException($"writing {_path} failed ({failure.Message})", failure);
        }
    }

    private void WriteLoop()
    {
        while (true)
        {
            try
            {
                var parameters = _model.Parameters();
                SafeTensorsWriter.Write(_path, parameters.Select((p, i) => SafeTensorsEntry.Float32(p.Name, _writing!.Views[i])),
                    ModelFile.Metadata(_model.Config, ModelFile.ModelKind));
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                lock (_lock) _failure = e;
            }
            lock (_lock)
            {
                if (!_nextPending)
                {
                    _task = null;
                    return;
                }
                (_writing, _next) = (_next, _writing);
                _nextPending = false;
            }
        }
    }

    private static void Copy(IReadOnlyList<Parameter> parameters, ref WeightsCopy? into)
    {
        var arena = ParameterArena.Of(parameters);
        into ??= new WeightsCopy(arena);
        into.All.CopyFrom(arena.Weights);
    }

    /// <summary>A copy of the weight arena (one memcpy), with a view of it per parameter for the writer.</summary>
    private sealed unsafe class WeightsCopy(ParameterArena arena) : IDisposable
    {
        public Tensor All { get; } = new(arena.Weights.ShapeArray);

        public Tensor[] Views => field ??= arena.Parameters.Select(p => Tensor.View(All.Data + p.Offset, p.Value.ShapeArray)).ToArray();

        public void Dispose() => All.Dispose();
    }

    public void Dispose()
    {
        Task? task;
        lock (_lock) task = _task;
        try
        {
            task?.Wait();
        }
        catch (AggregateException) { } // disposing after a failed run: the failure was reported (or is moot)
        _writing?.Dispose();
        _next?.Dispose();
    }
}

using System.Buffers;
using System.Runtime.InteropServices;
using GptSharp.Tensors;

namespace GptSharp.Formats.PyTorch;

/// <summary>
/// A PyTorch <c>torch.save</c> archive (zip with <c>&lt;prefix&gt;/data.pkl</c> and one <c>&lt;prefix&gt;/data/&lt;key&gt;</c>
/// record per storage), unpickled by <see cref="RestrictedUnpickler"/>. <see cref="Root"/> is the saved object;
/// tensors are read on demand straight from the file.
/// </summary>
internal sealed class PthFile : IDisposable
{
    private readonly TorchZipReader _zip;
    private readonly string _prefix;

    private PthFile(string path)
    {
        FilePath = path;
        using (var probe = File.OpenRead(path))
        {
            Span<byte> magic = stackalloc byte[4];
            if (probe.ReadAtLeast(magic, 4, throwOnEndOfStream: false) < 4 || magic[0] != 'P' || magic[1] != 'K')
                throw new InvalidDataException($"{path}: not a zip-format PyTorch file (the legacy pre-1.6 torch.save format is not supported; re-save it with a newer torch).");
        }
        _zip = new TorchZipReader(path);
        try
        {
            // Like PyTorchStreamReader: the archive's folder is whatever precedes "/data.pkl" (file stem or "archive").
            string pkl = _zip.Names.FirstOrDefault(n => n.EndsWith("/data.pkl", StringComparison.Ordinal) && n.IndexOf('/') == n.Length - 9)
                ?? throw new InvalidDataException($"{path}: no '<name>/data.pkl' record: not a torch.save archive.");
            _prefix = pkl[..^"data.pkl".Length];
            if (_zip.Contains(_prefix + "byteorder") && System.Text.Encoding.ASCII.GetString(_zip.ReadAll(_prefix + "byteorder")).Trim() != "little")
                throw new InvalidDataException($"{path}: big-endian PyTorch archives are not supported.");
            Root = RestrictedUnpickler.Load(_zip.ReadAll(pkl), path);
            CheckStorages(Root);
        }
        catch
        {
            _zip.Dispose();
            throw;
        }
    }

    public string FilePath { get; }

    /// <summary>The unpickled object: a <see cref="PyDict"/> for state dicts and the book's checkpoint dict.</summary>
    public object? Root { get; }

    /// <summary>Zip record names (for <c>inspect</c>).</summary>
    public IReadOnlyList<string> RecordNames => _zip.Names;

    public static PthFile Open(string path)
    {
        if (!File.Exists(path)) throw new FileNotFoundException($"{path}: file not found.", path);
        return new PthFile(path);
    }

    /// <summary>
    /// The model's state dict: the root when it maps names to tensors (<c>torch.save(model.state_dict())</c>), else its
    /// <c>model_state_dict</c> entry (the book's model + optimizer checkpoint), or <c>state_dict</c>/<c>model</c>.
    /// </summary>
    public PthStateDict StateDict()
    {
        if (Root is PyDict d)
        {
            if (d.Items.Count > 0 && d.Items.All(kv => kv.Key is string && kv.Value is TorchTensor)) return new PthStateDict(this, d);
            foreach (var key in new[] { "model_state_dict", "state_dict", "model" })
                if (d.TryGet(key, out var inner) && inner is PyDict sd && sd.Items.All(kv => kv.Key is string && kv.Value is TorchTensor))
                    return new PthStateDict(this, sd);
        }
        throw new InvalidDataException($"{FilePath}: holds no state dict (expected a dict of tensors or a 'model_state_dict' entry).");
    }

    /// <summary>The <c>optimizer_state_dict</c> entry of a checkpoint dict, or null.</summary>
    public PyDict? OptimizerStateDict() =>
        Root is PyDict d && d.TryGet("optimizer_state_dict", out var o) && o is PyDict od ? od : null;

    /// <summary>Reads <paramref name="tensor"/> as float32 into <paramref name="destination"/> (its element count).</summary>
    public void ReadInto(TorchTensor tensor, Span<float> destination, string name)
    {
        if (destination.Length != tensor.ElementCount)
            throw new ArgumentException($"{FilePath}: tensor '{name}' [{string.Join(", ", tensor.Shape)}] has {tensor.ElementCount} elements, the destination holds {destination.Length}.");
        var dtype = tensor.Storage.DType;
        if (!dtype.IsConvertibleToFloat())
            throw new InvalidDataException($"{FilePath}: tensor '{name}' has dtype {dtype.SafeTensorsName()}, which cannot be read as float32.");
        if (tensor.IsSelfOverlapping)
            throw new InvalidDataException($"{FilePath}: tensor '{name}' [{string.Join(", ", tensor.Shape)}] repeats stored elements (an expanded or aliasing view); refusing to expand it.");
        string record = _prefix + "data/" + tensor.Storage.Key;
        int size = dtype.ElementSize();
        if (destination.Length == 0) return;
        if (tensor.IsContiguous)
        {
            long start = tensor.StorageOffset * size;
            if (dtype == TensorDType.F32 && BitConverter.IsLittleEndian)
            {
                // Straight from the file into the destination buffer.
                _zip.Read(record, start, MemoryMarshal.AsBytes(destination));
                return;
            }
            const int chunk = 1 << 16;
            var buffer = ArrayPool<byte>.Shared.Rent(chunk * size);
            try
            {
                for (int done = 0; done < destination.Length; done += chunk)
                {
                    int n = Math.Min(chunk, destination.Length - done);
                    _zip.Read(record, start + (long)done * size, buffer.AsSpan(0, n * size));
                    TensorDTypes.ConvertToFloat(dtype, buffer.AsSpan(0, n * size), destination.Slice(done, n));
                }
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }
            return;
        }
        // A strided view (rare in state dicts): read the storage span it covers, then gather element by element.
        long last = tensor.StorageOffset;
        for (int i = 0; i < tensor.Shape.Length; i++) last += (tensor.Shape[i] - 1) * tensor.Stride[i];
        long covered = last - tensor.StorageOffset + 1;
        var bytes = new byte[checked(covered * size)];
        _zip.Read(record, tensor.StorageOffset * size, bytes);
        var index = new int[tensor.Shape.Length];
        Span<float> one = stackalloc float[1];
        for (int k = 0; k < destination.Length; k++)
        {
            long element = 0;
            for (int i = 0; i < index.Length; i++) element += index[i] * tensor.Stride[i];
            TensorDTypes.ConvertToFloat(dtype, bytes.AsSpan((int)(element * size), size), one);
            destination[k] = one[0];
            for (int i = index.Length - 1; i >= 0; i--)
            {
                if (++index[i] < tensor.Shape[i]) break;
                index[i] = 0;
            }
        }
    }

    /// <summary>
    /// Every storage a tensor refers to exists and is as long as its persistent id says. The object graph comes
    /// from the file: it may be deep, cyclic (a list that holds itself) or a DAG of shared tuples whose paths
    /// are exponentially many, so it is walked with an explicit stack and each object is visited once.
    /// </summary>
    private void CheckStorages(object? root)
    {
        var visited = new HashSet<object>(ReferenceEqualityComparer.Instance);
        var checkedStorages = new HashSet<TorchStorage>(ReferenceEqualityComparer.Instance);
        var pending = new Stack<object?>();
        pending.Push(root);
        while (pending.Count > 0)
        {
            var o = pending.Pop();
            if (o is null || o is string || o is long || o is double || o is bool || !visited.Add(o)) continue;
            switch (o)
            {
                case TorchTensor t:
                    if (!checkedStorages.Add(t.Storage)) break;
                    string record = _prefix + "data/" + t.Storage.Key;
                    if (!_zip.Contains(record)) throw new InvalidDataException($"{FilePath}: storage record '{record}' is missing.");
                    // The unpickler bounds the element count so that this product fits a long.
                    long needed = t.Storage.ElementCount * t.Storage.DType.ElementSize();
                    if (_zip.SizeOf(record) < needed)
                        throw new InvalidDataException($"{FilePath}: storage record '{record}' has {_zip.SizeOf(record)} bytes, its tensor needs {needed}.");
                    break;
                case PyDict d:
                    foreach (var v in d.Items.Values) pending.Push(v);
                    break;
                case List<object?> l:
                    foreach (var v in l) pending.Push(v);
                    break;
                case PyTuple tuple:
                    foreach (var v in tuple.Items) pending.Push(v);
                    break;
            }
        }
    }

    public void Dispose() => _zip.Dispose();
}

/// <summary>A state dict inside a <see cref="PthFile"/>, as an <see cref="ITensorSource"/>.</summary>
internal sealed class PthStateDict : ITensorSource
{
    private readonly PthFile _file;
    private readonly Dictionary<string, (StoredTensor Info, TorchTensor Tensor)> _byName = new(StringComparer.Ordinal);
    private readonly List<StoredTensor> _tensors = new();

    internal PthStateDict(PthFile file, PyDict dict)
    {
        _file = file;
        foreach (var (key, value) in dict.Items)
        {
            var t = (TorchTensor)value!;
            // An expanded or aliasing view (stride 0, overlapping strides) would be materialized as a full tensor: a few
            // stored floats could claim gigabytes, and a weight built from one repeated value is never a real checkpoint.
            if (t.IsSelfOverlapping)
                throw new InvalidDataException($"{file.FilePath}: tensor '{key}' [{string.Join(", ", t.Shape)}] with strides [{string.Join(", ", t.Stride)}] "
                    + $"repeats stored elements (an expanded or aliasing view); re-save it with .contiguous() / .clone().");
            var info = new StoredTensor((string)key, t.Storage.DType, t.Shape);
            _tensors.Add(info);
            _byName[info.Name] = (info, t);
        }
    }

    public string FilePath => _file.FilePath;

    public IReadOnlyList<StoredTensor> Tensors => _tensors;

    public StoredTensor? Find(string name) => _byName.TryGetValue(name, out var e) ? e.Info : null;

    public void ReadInto(string name, Span<float> destination)
    {
        if (!_byName.TryGetValue(name, out var e)) throw new InvalidDataException($"{FilePath}: no tensor named '{name}'.");
        _file.ReadInto(e.Tensor, destination, name);
    }

    /// <summary>The file stays open as long as the <see cref="PthFile"/> it came from; disposing this does nothing.</summary>
    public void Dispose() { }
}

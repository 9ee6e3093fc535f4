using System.Buffers.Binary;
using System.Text;
using GptSharp.Formats;
using GptSharp.Formats.PyTorch;
using GptSharp.Tensors;

namespace GptSharp.Tests.Hostile;

/// <summary>Writes raw pickle opcodes, so tests can build the pickles an attacker would (cycles, shared DAGs, odd strides).</summary>
internal sealed class PickleBuilder
{
    private readonly MemoryStream _bytes = new();

    public PickleBuilder() => Op(0x80, 2);

    public PickleBuilder Op(params byte[] ops) { _bytes.Write(ops); return this; }

    public PickleBuilder Global(string module, string name) { Op((byte)'c'); _bytes.Write(Encoding.UTF8.GetBytes(module + "\n" + name + "\n")); return this; }

    public PickleBuilder Str(string s)
    {
        var b = Encoding.UTF8.GetBytes(s);
        Op((byte)'X');
        Span<byte> n = stackalloc byte[4];
        BinaryPrimitives.WriteUInt32LittleEndian(n, (uint)b.Length);
        _bytes.Write(n);
        _bytes.Write(b);
        return this;
    }

    public PickleBuilder Int(long v)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteInt64LittleEndian(b, v);
        Op(0x8a, 8);
        _bytes.Write(b);
        return this;
    }

    public PickleBuilder Tuple(params long[] values)
    {
        Op((byte)'(');
        foreach (long v in values) Int(v);
        return Op((byte)'t');
    }

    public PickleBuilder OrderedDict() => Global("collections", "OrderedDict").Op((byte)')', (byte)'R');

    /// <summary>A <c>_rebuild_tensor_v2</c> over float storage <paramref name="key"/> of <paramref name="storageElements"/>.</summary>
    public PickleBuilder Tensor(string key, long storageElements, long offset, long[] shape, long[] stride)
    {
        Global("torch._utils", "_rebuild_tensor_v2").Op((byte)'(');
        Op((byte)'(').Str("storage").Global("torch", "FloatStorage").Str(key).Str("cpu").Int(storageElements).Op((byte)'t', (byte)'Q');
        Int(offset).Tuple(shape).Tuple(stride).Op(0x89).OrderedDict();
        return Op((byte)'t', (byte)'R');
    }

    /// <summary>An OrderedDict state dict of one tensor, ready to <see cref="Stop"/>.</summary>
    public static byte[] StateDictOfOne(string name, long storageElements, long[] shape, long[] stride) =>
        new PickleBuilder().OrderedDict().Op((byte)'(').Str(name).Tensor("0", storageElements, 0, shape, stride).Op((byte)'u').Stop();

    public byte[] Stop() { Op((byte)'.'); return _bytes.ToArray(); }

    /// <summary>A torch.save zip holding <paramref name="pickle"/> and float storages (record name, bytes).</summary>
    public static void WritePth(string path, byte[] pickle, params (string Key, byte[] Data)[] storages)
    {
        using var file = File.Create(path);
        var zip = new TorchZipWriter(file);
        zip.Add("archive/data.pkl", pickle);
        foreach (var (key, data) in storages) zip.Add("archive/data/" + key, data);
        zip.Add("archive/version", Encoding.ASCII.GetBytes("3\n"));
        zip.Finish();
    }
}

using System.Buffers.Binary;
using System.Text;
using GptSharp.Model;
using GptSharp.Tensors;
using GptSharp.Randomness;

namespace GptSharp.Tests.Checkpoints;

/// <summary>A temporary directory deleted after the test.</summary>
internal sealed class TempDir : IDisposable
{
    public TempDir() => Directory.CreateDirectory(Path);

    public string Path { get; } = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "gptsharp-tests-" + Guid.NewGuid().ToString("N"));

    public string File(string name) => System.IO.Path.Combine(Path, name);

    public void Dispose()
    {
        try { Directory.Delete(Path, recursive: true); } catch (IOException) { }
    }
}

/// <summary>A stream that passes writes through until <c>failAfter</c> bytes, then throws like a full disk.</summary>
internal sealed class FailingStream(Stream inner, long failAfter) : Stream
{
    private long _written;

    public override void Write(byte[] buffer, int offset, int count) => Write(buffer.AsSpan(offset, count));

    public override void Write(ReadOnlySpan<byte> buffer)
    {
        if (_written + buffer.Length > failAfter)
        {
            int part = (int)(failAfter - _written);
            inner.Write(buffer[..part]);
            _written += part;
            throw new IOException("No space left on device (simulated).");
        }
        inner.Write(buffer);
        _written += buffer.Length;
    }

    public override void WriteByte(byte value) => Write([value]);
    public override bool CanRead => false;
    public override bool CanSeek => false;
    public override bool CanWrite => true;
    public override long Length => inner.Length;
    public override long Position { get => inner.Position; set => throw new NotSupportedException(); }
    public override void Flush() => inner.Flush();
    public override int Read(byte[] buffer, int offset, int count) => throw new NotSupportedException();
    public override long Seek(long offset, SeekOrigin origin) => throw new NotSupportedException();
    public override void SetLength(long value) => throw new NotSupportedException();
}

internal static class CheckpointTestHelpers
{
    public static readonly GptConfig Tiny = new() { VocabSize = 50, ContextLength = 8, EmbeddingDim = 16, Heads = 2, Layers = 2, DropRate = 0f };

    public static GptModel RandomModel(GptConfig config, ulong seed = 7) => new(config, new FastRandom(seed));

    /// <summary>A safetensors file from a raw header string and data bytes (for corrupt-file tests).</summary>
    public static void WriteRaw(string path, string header, byte[] data, long? declaredLength = null)
    {
        var json = Encoding.UTF8.GetBytes(header);
        var bytes = new byte[8 + json.Length + data.Length];
        BinaryPrimitives.WriteUInt64LittleEndian(bytes, (ulong)(declaredLength ?? json.Length));
        json.CopyTo(bytes, 8);
        data.CopyTo(bytes, 8 + json.Length);
        File.WriteAllBytes(path, bytes);
    }

    public static void AssertSameParameters(GptModel expected, GptModel actual)
    {
        var a = expected.Parameters();
        var b = actual.Parameters();
        Assert.Equal(a.Count, b.Count);
        for (int i = 0; i < a.Count; i++)
        {
            Assert.Equal(a[i].Name, b[i].Name);
            Assert.Equal(a[i].Value.ShapeArray, b[i].Value.ShapeArray);
            Assert.True(a[i].Value.Span.SequenceEqual(b[i].Value.Span), $"values of {a[i].Name} differ");
        }
    }
}

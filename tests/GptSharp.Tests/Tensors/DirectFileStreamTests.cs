using GptSharp.IO;

namespace GptSharp.Tests.Tensors;

public sealed class DirectFileStreamTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "gptsharp-direct-" + Guid.NewGuid().ToString("N"));

    public DirectFileStreamTests() => Directory.CreateDirectory(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Theory]
    [InlineData(0)]
    [InlineData(1)]
    [InlineData(4095)]
    [InlineData(4097)]
    [InlineData((8 << 20) + 3)]      // one full staging chunk and a tail
    [InlineData((16 << 20) + 12288)] // two chunks and a block-aligned tail
    public void AnUnbufferedAtomicWriteHoldsExactlyTheBytesWritten(int length)
    {
        var bytes = new byte[length];
        new Random(length).NextBytes(bytes);
        string path = Path.Combine(_dir, "file.bin");
        // Written in uneven pieces, as a writer of tensors does.
        AtomicFile.Write(path, stream =>
        {
            for (int done = 0; done < length; done += 12345) stream.Write(bytes.AsSpan(done, Math.Min(12345, length - done)));
        }, unbuffered: true);
        Assert.Equal(bytes, File.ReadAllBytes(path));
        Assert.Empty(Directory.GetFiles(_dir, ".*.tmp"));
    }

    [Fact]
    public void WhereTheFileSystemAllowsItTheStreamBypassesThePageCache()
    {
        if (!OperatingSystem.IsLinux()) return; // elsewhere AtomicFile falls back to a buffered FileStream
        string path = Path.Combine(_dir, "probe.bin");
        using var stream = DirectFileStream.TryCreate(path);
        // /tmp on tmpfs has no O_DIRECT: then TryCreate says so with null, and leaves no file behind.
        if (stream is null) Assert.False(File.Exists(path));
        else Assert.Equal(0, stream.Position);
    }
}

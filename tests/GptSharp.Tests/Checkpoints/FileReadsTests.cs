
using GptSharp.Formats;
namespace GptSharp.Tests.Checkpoints;

public class FileReadsTests
{
    [Fact]
    public void ReadsExactlyOrSaysWhereTheFileEnded()
    {
        string path = Path.GetTempFileName();
        try
        {
            File.WriteAllBytes(path, Enumerable.Range(0, 100).Select(i => (byte)i).ToArray());
            using var handle = File.OpenHandle(path);

            var buffer = new byte[30];
            Assert.True(FileReads.TryReadExactly(handle, 70, buffer, out long end));
            Assert.Equal(100, end);
            Assert.Equal(Enumerable.Range(70, 30).Select(i => (byte)i), buffer);

            Assert.False(FileReads.TryReadExactly(handle, 80, buffer, out end));
            Assert.Equal(100, end); // 20 bytes read, then the end of the file
            Assert.Equal(Enumerable.Range(80, 20).Select(i => (byte)i), buffer[..20]);
        }
        finally
        {
            File.Delete(path);
        }
    }
}
